"""Images as sequences of k×k patch tokens (the FPT study's MNIST and CIFAR-10 tasks).

    image (H, W, C) uint8 -> / 255 -> [kzl's CIFAR-10 transform] -> (H/k · W/k, k·k·C) tokens,
    row-major, pixel order (p1 p2 c)
    MNIST 28×28, k=4: 49 tokens of 16 values; CIFAR-10 32×32, k=4: 64 tokens of 48 values

data.transform (auto = kzl for cifar10, none otherwise): kzl trained CIFAR-10 with a zero-padded random
crop, a horizontal flip and a ±20° rotation, and normalised both splits with the CIFAR mean and std
(data/images.py). Training batches are augmented from a generator seeded by (train.seed, the batch's
indices), so a resumed run sees the same pixels; held-out images are only normalised.

The universal-computation layout ('b c (h p1) (w p2) -> b (h w) (p1 p2 c)'), without its resize.
Images come from the readers of data/images.py: mnist and cifar10 need data.path (their IDX files /
python batches), fashion_mnist defaults to the Debian package's folder, digits is scikit-learn's 8×8
set. Held-out data is the dataset's own test split; digits has none, so a fixed seeded 20% of it is
held out and never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from einops import rearrange

from patchbench.adapters.patch_embed import check_patch
from patchbench.config import num
from patchbench.data.image_splits import DATASETS, Split, load_image_splits
from patchbench.data.images import cifar_normalize, kzl_augment, resolve_transform
from patchbench.errors import ConfigError
from patchbench.registry import register_task
from patchbench.tasks.sequence import HeldOutEval, SequenceTask


@dataclass
class ImagePatchesData(HeldOutEval):
    dataset: str = "mnist"  # mnist | fashion_mnist | cifar10 | digits
    path: str = ""  # the dataset's folder ("" = fashion_mnist: /usr/share/datasets/fashion-mnist)
    download: bool = False  # let torchvision download mnist / fashion_mnist / cifar10 into data.path
    patch_size: int = num(4, ge=1)  # k: tokens are k×k patches
    train_limit: int = num(0, ge=0)  # use at most N training images (seeded subset); 0 = all
    seed: int = num(0, ge=0)  # seeds the held-out split of digits and the train_limit subset
    test_steps_per_iter: int = num(100, ge=0)  # the seed's MNIST / CIFAR-10 setting
    transform: str = "auto"  # auto (kzl for cifar10, else none) | kzl (crop, flip, rotate 20; CIFAR mean/std) | none (pixels / 255)

    def validate(self) -> None:
        self.validate_eval()
        resolve_transform(self.transform, self.dataset)
        if self.dataset not in DATASETS:
            raise ConfigError(f"data.dataset: {self.dataset!r}; valid: {', '.join(DATASETS)}")
        if self.patch_size < 1:
            raise ConfigError(f"data.patch_size: must be at least 1, got {self.patch_size}")
        if self.train_limit < 0:
            raise ConfigError(f"data.train_limit: must be 0 or more, got {self.train_limit}")


class ImagePatchesTask(SequenceTask):
    objectives = ("classification",)
    kind = "classify"

    def __init__(self, cfg):
        super().__init__(cfg)
        d = self.data
        self.train, self.test, self.source = load_image_splits(d.dataset, d.path, d.download, d.seed)
        if d.train_limit and d.train_limit < len(self.train.labels):
            keep = np.sort(np.random.default_rng([d.seed, 1]).permutation(len(self.train.labels))[: d.train_limit])
            self.train = Split(self.train.images[keep], self.train.labels[keep])
        _, h, w, c = self.train.images.shape
        check_patch(d.patch_size, h, w, key="data.patch_size", what=f"the {h}x{w} images of {d.dataset}")
        self.num_train, self.num_test = len(self.train.labels), len(self.test.labels)
        self.seq_len = (h // d.patch_size) * (w // d.patch_size)
        self.token_dim = d.patch_size * d.patch_size * c
        self.classes = int(max(self.train.labels.max(), self.test.labels.max())) + 1
        self.transform = resolve_transform(d.transform, d.dataset)
        if self.transform == "kzl" and c != 3:
            raise ConfigError(f"data.transform: kzl is CIFAR-10's transform and needs 3-channel images; {d.dataset} has {c}; "
                              "set data.transform=none")

    def pixels(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (B, H, W, C) -> float (B, C, H, W): / 255, then normalised under the kzl transform."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
        return cifar_normalize(x) if self.transform == "kzl" else x

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, k*k*C) patch tokens."""
        k = self.data.patch_size
        return rearrange(x, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=k, p2=k).contiguous()

    def example(self, split: int, i: int) -> tuple[np.ndarray, np.int64]:
        """One unaugmented example (held-out data, and training data without the kzl transform)."""
        s = self.train if split == 0 else self.test
        return self.tokens(self.pixels(s.images[i:i + 1]))[0].numpy(), s.labels[i]  # (N, k*k*C)

    def make_batch(self, ib: np.ndarray) -> dict[str, torch.Tensor]:
        """A training batch under the kzl transform: augmented, then normalised, then cut into patches."""
        x = torch.from_numpy(np.ascontiguousarray(self.train.images[ib])).permute(0, 3, 1, 2).float().div_(255.0)  # (B, C, H, W)
        x = kzl_augment(x, np.random.default_rng([self.cfg.train.seed, *map(int, ib)]))  # same batch -> same pixels
        return {"x": self.tokens(cifar_normalize(x)), "y": torch.from_numpy(self.train.labels[ib])}

    def batches(self, index_batches):
        if self.transform != "kzl":
            yield from super().batches(index_batches)
            return
        loader = torch.utils.data.DataLoader(_BatchSource(self), batch_size=None, sampler=index_batches,
                                             num_workers=self.cfg.train.num_workers)  # each "index" is a whole batch
        yield from loader

    def io(self) -> dict[str, Any]:
        return {"input_kind": "continuous", "input_dim": self.token_dim, "output_dim": self.classes, "out_tokens": 0}

    def shorten_hint(self) -> str:
        return "use a larger data.patch_size"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "source": self.source, "patch_size": self.data.patch_size, "transform": self.transform}


class _BatchSource(torch.utils.data.Dataset):
    """Map-style view for DataLoader workers: the 'index' is a whole batch's index array."""

    def __init__(self, task: ImagePatchesTask):
        self.task = task

    def __getitem__(self, ib: np.ndarray) -> dict[str, torch.Tensor]:
        return self.task.make_batch(np.asarray(ib))

    def __len__(self) -> int:
        return self.task.num_train


@register_task("image_patches", data_config=ImagePatchesData, modality="sequence")
def image_patches(cfg) -> ImagePatchesTask:
    """Image classification from k×k patch tokens (MNIST, Fashion-MNIST, CIFAR-10, digits)."""
    return ImagePatchesTask(cfg)
