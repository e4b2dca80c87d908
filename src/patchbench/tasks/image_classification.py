"""Image classification (the ViT × ConvMixer and Visual Transformers studies): cross-entropy, accuracy.

Data: any reader of data/images.py, decoded once into uint8 arrays. Batches are built from the
engine's index arrays: pixels / 255 (both seeds), then the seeds' augmentations on the batch —
horizontal flip (p=0.5) and, for a share rotate_p of the images, a rotation uniform in ±rotate
degrees with reflected borders — drawn from a generator seeded by (train.seed, the batch's
indices), so a resumed run sees the same pixels.

The held-out split is the dataset's own test split when it has one (val_split=auto), otherwise a fixed
seeded val_fraction of the training data that training never sees (val_split=fraction forces that
even when a test split exists). Validation never uses training examples.

evaluate() -> val_loss, val_accuracy (primary, higher is better) and train_accuracy: the running
accuracy of the training batches since the previous validation, counted on the device inside
train_loss (no host sync per step; this rank's batches only under DDP).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from patchbench.config import num
from patchbench.data.cache import default_cache_dir
from patchbench.data.images import KINDS, RawDataset, Subset, cifar_normalize, kzl_augment, read_dataset, resolve_transform
from patchbench.errors import ConfigError, DataMissing
from patchbench.models.base import ImageModel
from patchbench.registry import register_task
from patchbench.rundir import RunDir
from patchbench.tasks.base import Task, evaluating, evaluation
from patchbench.tasks.image_plots import prediction_grid


@dataclass
class ImageDataConfig:
    dataset: str = "digits"  # folder | dogs_vs_cats | mnist | fashion_mnist | cifar10 | digits
    path: str = ""  # the dataset's folder ("" = fashion_mnist: /usr/share/datasets/fashion-mnist)
    fallback: str = ""  # a dataset (with its default path) used when `dataset`'s files are absent; "" = none
    image_size: int = num(0, ge=0)  # resize to image_size × image_size; 0 = the native size
    hflip: bool = False  # random horizontal flip, p = 0.5 (training only)
    rotate: float = num(0.0, ge=0, le=180)  # random rotation within ±rotate degrees (training only)
    rotate_p: float = num(1.0, ge=0, le=1)  # share of images rotated (the seed's albumentations Rotate(15): p=0.5)
    val_split: str = "auto"  # auto (the test split if any, else val_fraction) | fraction
    val_fraction: float = 0.1  # share of the training data held out when there is no test split
    split_seed: int = num(0, ge=0)  # seeds the held-out split and the limits (kept apart from train.seed)
    train_limit: int = num(0, ge=0)  # use at most N training examples (seeded subset); 0 = all
    val_limit: int = num(0, ge=0)  # validate on at most N held-out examples (seeded subset); 0 = all
    val_batch_size: int = num(0, ge=0)  # 0 = train.batch_size
    download: bool = False  # let torchvision download mnist / fashion_mnist / cifar10 into data.path
    on_bad_image: str = "fail"  # an image file that cannot be decoded: fail (ConfigError) | skip (warn, count)
    cache_dir: str = ""  # decoded-image cache for folders; "" = $PATCHBENCH_CACHE or ~/.cache/patchbench
    cache: bool = True  # cache decoded image folders as .npy (memory-mapped on later runs)
    transform: str = "auto"  # auto (kzl for cifar10, else none) | kzl (crop, flip, rotate 20; CIFAR mean/std) | none

    def validate(self) -> None:
        if resolve_transform(self.transform, self.dataset) == "kzl" and (self.hflip or self.rotate):
            raise ConfigError(f"data.hflip / data.rotate: the kzl transform (data.transform={self.transform}, for {self.dataset}) "
                              "already crops, "
                              "flips and rotates; set data.transform=none to use your own augmentation")
        for key in ("dataset", "fallback"):
            value = getattr(self, key)
            if value not in KINDS and not (key == "fallback" and value == ""):
                raise ConfigError(f"data.{key}: {value!r}; valid datasets: {', '.join(KINDS)}")
        if self.val_split not in ("auto", "fraction"):
            raise ConfigError(f"data.val_split: {self.val_split!r}; valid: auto, fraction")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction: {self.val_fraction} must be between 0 and 1 (exclusive)")
        if self.on_bad_image not in ("skip", "fail"):
            raise ConfigError(f"data.on_bad_image: {self.on_bad_image!r}; valid: skip, fail")
        for key in ("image_size", "train_limit", "val_limit", "val_batch_size"):
            if getattr(self, key) < 0:
                raise ConfigError(f"data.{key}: must be 0 or more, got {getattr(self, key)}")
        if self.rotate < 0 or self.rotate > 180:
            raise ConfigError(f"data.rotate: {self.rotate} degrees; valid: 0 to 180")
        if not 0.0 <= self.rotate_p <= 1.0:
            raise ConfigError(f"data.rotate_p: {self.rotate_p}; valid: 0 to 1")


class ImageClassificationTask(Task):
    objectives = ("classification",)
    primary_metric = "val_accuracy"
    higher_is_better = True

    def __init__(self, cfg):
        d: ImageDataConfig = cfg.data
        self.cfg, self.data = cfg, d
        self.objective = self.resolve_objective(cfg)
        self.fallback_note = ""
        try:
            raw = self._read(d.dataset, d.path)
            self.kind = d.dataset
        except DataMissing as e:
            if not d.fallback:
                raise
            print(f"data: {e}; using data.fallback={d.fallback}", file=sys.stderr)
            self.fallback_note = f"{d.dataset} absent, fell back to {d.fallback}"
            raw = self._read(d.fallback, "")
            self.kind = d.fallback
        self.raw = raw
        self.classes = raw.classes
        self.transform = resolve_transform(d.transform, self.kind)  # of the dataset actually read (after a fallback)
        if self.transform == "kzl" and raw.train.images.shape[-1] != 3:
            raise ConfigError(f"data.transform: kzl is CIFAR-10's transform and needs 3-channel images; {self.kind} has "
                              f"{raw.train.images.shape[-1]}; set data.transform=none")
        self.train, self.val, self.val_from = self._split(raw)
        self.num_train = len(self.train)
        _, self.height, self.width, self.channels = self.train.shape
        self._correct: torch.Tensor | None = None  # running training accuracy, on the device
        self._seen: torch.Tensor | None = None

    def _read(self, kind: str, path: str) -> RawDataset:
        d = self.data
        cache = Path(d.cache_dir or default_cache_dir()).expanduser() / "images" if d.cache else None
        return read_dataset(kind, path, d.image_size, d.on_bad_image, d.download, cache, self.cfg.train.num_workers)

    def _split(self, raw: RawDataset) -> tuple[Subset, Subset, str]:
        d = self.data
        rng = np.random.default_rng(d.split_seed)
        if raw.test is not None and d.val_split == "auto":
            train, val, how = Subset(raw.train), Subset(raw.test), "the dataset's test split"
        else:
            n = len(raw.train.labels)
            n_val = max(1, round(n * d.val_fraction))
            if n - n_val < 1:
                raise ConfigError(f"data.val_fraction: {d.val_fraction} of {n} examples leaves nothing to train on")
            perm = rng.permutation(n)  # disjoint by construction: training never sees a held-out row
            train, val = Subset(raw.train, np.sort(perm[n_val:])), Subset(raw.train, np.sort(perm[:n_val]))
            how = f"a seeded {d.val_fraction:.0%} of the training data (split_seed {d.split_seed})"
        if d.train_limit and d.train_limit < len(train):
            train = train.subset(np.sort(rng.permutation(len(train))[:d.train_limit]))
        if d.val_limit and d.val_limit < len(val):
            val = val.subset(np.sort(rng.permutation(len(val))[:d.val_limit]))
        if d.image_size:  # array datasets come at their native size: resize only the rows used
            train, val = train.resized(d.image_size), val.resized(d.image_size)
        return train, val, how

    # ---------------------------------------------------------------- model <-> data
    def prepare(self, model_cfg: Any) -> Any:
        have = {"num_classes": len(self.classes), "image_size": self.height, "in_chans": self.channels}
        where = {"num_classes": f"{self.kind} has {len(self.classes)} classes",
                 "image_size": f"the images are {self.height}x{self.width} (data.image_size)",
                 "in_chans": f"the images have {self.channels} channel(s)"}
        if self.height != self.width and getattr(model_cfg, "image_size", None) is not None:
            raise ConfigError(f"data.image_size: the images are {self.height}x{self.width}; set data.image_size to make them square")
        changes = {}
        for key, value in have.items():
            current = getattr(model_cfg, key, None)
            if current is None:
                continue
            if current == 0:
                changes[key] = value
            elif current != value:
                raise ConfigError(f"model.{key}: {current} but {where[key]}; set model.{key}=0 to follow the data")
        if not changes:
            return model_cfg
        model_cfg = dataclasses.replace(model_cfg, **changes)
        check = getattr(model_cfg, "validate", None)
        if check is not None:
            check()  # e.g. a patch size that does not divide the data's image size
        return model_cfg

    def check_model(self, model: nn.Module) -> None:
        if not isinstance(model, ImageModel):
            raise ConfigError(f"model.name: {type(model).__name__} is not an image classifier; image_classification needs an image model")
        if model.num_classes != len(self.classes):
            raise ConfigError(f"model.num_classes: the model predicts {model.num_classes} classes but {self.kind} has {len(self.classes)}")

    # ---------------------------------------------------------------- batches
    def to_tensor(self, images: np.ndarray, normalize: bool = True) -> torch.Tensor:
        """uint8 (B, H, W, C) -> float (B, C, H, W) in [0, 1], normalised with the CIFAR mean/std under kzl."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
        return cifar_normalize(x) if normalize and self.transform == "kzl" else x

    def make_batch(self, ib: np.ndarray) -> dict[str, torch.Tensor]:
        if self.transform == "kzl":  # augment in [0, 1], then normalise (kzl's order)
            rng = np.random.default_rng([self.cfg.train.seed, *map(int, ib)])
            x = kzl_augment(self.to_tensor(self.train.images(ib), normalize=False), rng)
            return {"x": cifar_normalize(x), "y": torch.from_numpy(self.train.labels[ib])}
        x = self.to_tensor(self.train.images(ib))  # (B, C, H, W)
        if self.data.hflip or self.data.rotate:
            rng = np.random.default_rng([self.cfg.train.seed, *map(int, ib)])  # same batch -> same augmentation
            x = augment(x, rng, self.data.hflip, self.data.rotate, self.data.rotate_p)
        return {"x": x, "y": torch.from_numpy(self.train.labels[ib])}

    def batches(self, index_batches: Iterable[np.ndarray]) -> Iterator[dict[str, torch.Tensor]]:
        workers = self.cfg.train.num_workers
        if workers <= 0:
            for ib in index_batches:
                yield self.make_batch(ib)
            return
        pin = torch.cuda.is_available() and self.cfg.train.device != "cpu"
        loader = torch.utils.data.DataLoader(
            _BatchSource(self), batch_size=None, sampler=index_batches, num_workers=workers, pin_memory=pin,
        )  # each "index" is a whole batch's index array, order kept
        yield from loader

    def train_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(batch["x"]).float()  # (B, classes)
        y = batch["y"]
        with torch.no_grad():  # running training accuracy, on the device: no host sync
            correct = (logits.argmax(-1) == y).sum()
            if self._correct is None or self._correct.device != correct.device:
                self._correct = torch.zeros((), dtype=torch.long, device=correct.device)
                self._seen = torch.zeros((), dtype=torch.long, device=correct.device)
            self._correct += correct
            self._seen += y.numel()
        return F.cross_entropy(logits, y)

    @torch.no_grad()
    def predict(self, model: nn.Module, device: torch.device, images: np.ndarray, autocast=None) -> torch.Tensor:
        """Logits (N, classes) for uint8 images, in val-sized batches."""
        bs = self.data.val_batch_size or self.cfg.train.batch_size
        out = []
        for i in range(0, len(images), bs):
            x = self.to_tensor(images[i:i + bs]).to(device)
            with (autocast() if autocast else torch.autocast(device.type, enabled=False)):
                out.append(model(x).float())
        return torch.cat(out)

    @evaluation
    def evaluate(self, model: nn.Module, device: torch.device, autocast) -> dict[str, float]:
        bs = self.data.val_batch_size or self.cfg.train.batch_size
        loss = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        for i in range(0, len(self.val), bs):
            x = self.to_tensor(self.val.images(slice(i, i + bs))).to(device)
            y = torch.from_numpy(self.val.labels[i:i + bs]).to(device)
            with autocast():
                logits = model(x).float()
            loss += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(-1) == y).sum()
        n = len(self.val)
        out = {"val_loss": loss.item() / n, "val_accuracy": correct.item() / n}
        if self._seen is not None and int(self._seen) > 0:
            out["train_accuracy"] = int(self._correct) / int(self._seen)
            self._correct.zero_()
            self._seen.zero_()
        return out

    def describe(self) -> dict[str, Any]:
        out = {
            "dataset": self.kind, "source": self.raw.source, "classes": len(self.classes),
            "class_names": self.classes[:20], "train_examples": int(self.num_train),
            "val_examples": len(self.val), "held_out": self.val_from,
            "image_size": f"{self.height}x{self.width}", "channels": self.channels,
            "augment": {"hflip": self.data.hflip, "rotate": self.data.rotate, "rotate_p": self.data.rotate_p},
            "transform": self.transform,
            "bad_images_skipped": len(self.raw.bad_files), "ignored_files": self.raw.ignored_files,
        }
        if self.fallback_note:
            out["fallback"] = self.fallback_note
        return out

    # ---------------------------------------------------------------- extras after training
    def after_training(self, model: nn.Module, device: torch.device, run: RunDir, n: int = 16) -> Path:
        """A grid of the first `n` held-out images with predicted and true labels (RUN/predictions.png), drawn
        with the best weights when train.keep_best saved them (the seed's "sample inference (best model)")."""
        title = "final weights"
        best = run.best_weights()
        if best is not None:
            from safetensors.torch import load_model

            model = copy.deepcopy(model)
            load_model(model, str(best))
            meta = run.best_meta()
            title = f"best weights (step {meta.get('step')}, val_loss {meta.get('val_loss', float('nan')):.4f})"
        images, labels = self.val.images(slice(0, n)), self.val.labels[:n]
        with evaluating(model):
            probs = torch.softmax(self.predict(model, device, images), -1).cpu()  # (n, classes)
        return prediction_grid(images, labels, probs, self.classes, run.predictions_path, title=title)


class _BatchSource(torch.utils.data.Dataset):
    """Map-style view for DataLoader workers: the 'index' is a whole batch's index array."""

    def __init__(self, task: ImageClassificationTask):
        self.task = task

    def __getitem__(self, ib: np.ndarray) -> dict[str, torch.Tensor]:
        return self.task.make_batch(ib)

    def __len__(self) -> int:
        return self.task.num_train


def augment(x: torch.Tensor, rng: np.random.Generator, hflip: bool, rotate: float, rotate_p: float = 1.0) -> torch.Tensor:
    """Per-image horizontal flip (p=0.5) and, for a share rotate_p of the images, a rotation within
    ±rotate degrees with reflected borders."""
    B = x.shape[0]
    if hflip:
        flip = torch.from_numpy(rng.random(B) < 0.5)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if rotate:
        angle = rng.uniform(-rotate, rotate, B) * (rng.random(B) < rotate_p)  # 0 = left as is
        theta = torch.from_numpy(angle * (math.pi / 180.0)).float()
        cos, sin = torch.cos(theta), torch.sin(theta)
        zero = torch.zeros_like(cos)
        mat = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)  # (B, 2, 3)
        grid = F.affine_grid(mat, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return x


@register_task("image_classification", data_config=ImageDataConfig, modality="image")
def image_classification(cfg) -> ImageClassificationTask:
    """Image classification: folders, Dogs-vs-Cats, (Fashion-)MNIST, CIFAR-10, digits; accuracy."""
    return ImageClassificationTask(cfg)
