"""What the FPT tasks share: token sequences in, one of three heads out, the seed's evaluation protocol.

    kind       model output           target               loss   metrics (primary first)
    classify   (B, classes)           (B,) class           CE     val_accuracy (+ val_mae for sums, val_auroc for 2 classes)
    bits       (B, n/p, 2p) -> (B, n, 2)  (B, n) bits 0/1  CE     val_accuracy per bit
               (B, n/p, p)  -> (B, n)     (bce_per_bit)    BCE    (one logit per bit, as dl-project)
    regress    (B, 1)                 (B,) a number        MSE    val_mae (+ val_mse), in the target's units

Regression trains on the standardized target (y - mean) / std, so the output layer starts at the right
scale; val_loss is that MSE, val_mae / val_mse are reported in the target's own units.

Protocol (seed): every train.eval_every steps (its steps_per_iter), the model is scored on
data.test_steps_per_iter batches drawn without replacement from the held-out split; the run's result is
the mean over the last train.final_metric_window evaluations. The draw is seeded from the run's torch
generator, whose state every checkpoint keeps, so a resumed run draws the same batches.
test_steps_per_iter: 0 scores the whole held-out split every time.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from patchbench.adapters.sequence_tokens import SequenceIO
from patchbench.config import num
from patchbench.errors import ConfigError
from patchbench.models.base import SequenceModel
from patchbench.tasks.base import Task, evaluation

TRAIN, TEST = 0, 1


@dataclass
class HeldOutEval:
    """Evaluation fields every FPT task's data config has (the seed's test_steps_per_iter)."""

    test_steps_per_iter: int = num(25, ge=0)  # held-out batches per evaluation; 0 = the whole held-out split
    test_batch_size: int = num(0, ge=0)  # 0 = train.batch_size

    def validate_eval(self) -> None:
        for key in ("test_steps_per_iter", "test_batch_size"):
            if getattr(self, key) < 0:
                raise ConfigError(f"data.{key}: must be 0 or more, got {getattr(self, key)}")


def fill_io(model_cfg: Any, task: str, **need: Any) -> Any:
    """Fill a sequence model's I/O fields from the task; an explicit value that disagrees is an error."""
    if not isinstance(model_cfg, SequenceIO):
        from patchbench import registry

        valid = [n for n in registry.list_models() if registry.get_model(n).modality == "sequence"]
        raise ConfigError(f"model.name: {model_cfg.name!r} does not take token sequences; task {task} needs one of: {', '.join(valid)}")
    changes = {}
    for key, want in need.items():
        have, auto = getattr(model_cfg, key), ("auto" if key == "input_kind" else 0)
        if have == auto:
            changes[key] = want
        elif have != want:
            raise ConfigError(f"model.{key}: {have!r} but task {task} needs {want!r}; leave it at {auto!r} to take the task's")
    return dataclasses.replace(model_cfg, **changes) if changes else model_cfg


class _Split(Dataset):
    def __init__(self, task: SequenceTask, split: int):
        self.task, self.split = task, split

    def __len__(self) -> int:
        return self.task.num_train if self.split == TRAIN else self.task.num_test

    def __getitem__(self, i: int):
        return self.task.example(self.split, int(i))


class SequenceTask(Task):
    """Subclasses set kind, num_train, num_test, seq_len and io(), and implement example()."""

    kind = "classify"  # classify | bits | regress
    num_test = 0
    seq_len = 0  # tokens per example (the longest, for variable-length data)
    variable_length = False  # discrete ids of different lengths: right-padded with 0, with a mask
    mask_padding = True  # False: pad without a mask, so the model sees the pads and reads the last position (dl-project)
    report_mae = False  # classify over sums: also report |predicted - true|
    target_mean, target_std = 0.0, 1.0  # regress: standardization of the target
    n_bits = 0  # bits: bits per example
    bit_logits = 2  # bits: 2 logits per bit with CE (kzl) | 1 logit per bit with BCE (dl-project)

    def __init__(self, cfg):
        self.cfg, self.data = cfg, cfg.data
        self.objective = self.resolve_objective(cfg)
        self.set_kind(self.kind)

    def set_kind(self, kind: str) -> None:
        self.kind = kind
        self.primary_metric = "val_mae" if kind == "regress" else "val_accuracy"
        self.higher_is_better = kind != "regress"

    # ---------------------------------------------------------------- subclass interface
    @abstractmethod
    def example(self, split: int, i: int) -> tuple[np.ndarray, Any]:
        """x: (N, F) float32 or (N,) int64 ids; y: class, bit vector or number."""

    @abstractmethod
    def io(self) -> dict[str, Any]:
        """input_kind, input_dim | vocab_size, output_dim, out_tokens for fill_io."""

    # ---------------------------------------------------------------- model <-> data
    def prepare(self, model_cfg: Any) -> Any:
        return fill_io(model_cfg, self.cfg.task.name, **self.io())

    def check_model(self, model: nn.Module) -> None:
        if not isinstance(model, SequenceModel):
            raise ConfigError(f"model.name: {type(model).__name__} does not take token sequences; task {self.cfg.task.name} "
                              "needs a sequence model")
        if self.seq_len > model.n_positions:
            raise ConfigError(f"task {self.cfg.task.name}: {self.seq_len} tokens per example exceed the model's "
                              f"{model.n_positions} positions; {self.shorten_hint()}")
        if self.variable_length and self.mask_padding and not model.masks_padding:
            raise ConfigError(f"task {self.cfg.task.name}: padded variable-length inputs need a body that can mask padding; "
                              f"{type(model).__name__} cannot")

    def shorten_hint(self) -> str:
        return "use larger patches or shorter inputs"

    def items_per_example(self) -> int:
        return self.seq_len

    # ---------------------------------------------------------------- batches
    def collate(self, items: list[tuple[np.ndarray, Any]]) -> dict[str, torch.Tensor]:
        xs, ys = zip(*items)
        batch: dict[str, torch.Tensor] = {}
        if self.variable_length:
            n = max(len(x) for x in xs)
            ids = np.zeros((len(xs), n), dtype=np.int64)
            mask = np.zeros((len(xs), n), dtype=bool)
            for i, x in enumerate(xs):
                ids[i, :len(x)], mask[i, :len(x)] = x, True
            batch["x"] = torch.from_numpy(ids)  # (B, N)
            if self.mask_padding:
                batch["mask"] = torch.from_numpy(mask)  # (B, N), True on real tokens
        else:
            batch["x"] = torch.from_numpy(np.stack(xs))  # (B, N, F) or (B, N)
        y = np.stack([np.asarray(v) for v in ys])
        batch["y"] = torch.from_numpy(y.astype(np.float32 if self.kind == "regress" else np.int64))
        return batch

    def batches(self, index_batches) -> Iterator[dict[str, torch.Tensor]]:
        loader = DataLoader(_Split(self, TRAIN), batch_sampler=index_batches, collate_fn=self.collate,
                            num_workers=self.cfg.train.num_workers)
        yield from loader

    # ---------------------------------------------------------------- loss and metrics
    def _forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = model(batch["x"], batch.get("mask"))
        if self.kind == "bits" and self.bit_logits == 1:
            return out.reshape(out.shape[0], self.n_bits).float()  # (B, n)
        if self.kind == "bits":
            return out.reshape(out.shape[0], self.n_bits, 2).float()  # (B, n, 2)
        if self.kind == "regress":
            return out.reshape(out.shape[0]).float()  # (B,)
        return out.float()  # (B, classes)

    def _loss(self, out: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        if self.kind == "regress":
            return F.mse_loss(out, (y - self.target_mean) / self.target_std, reduction=reduction)
        if self.kind == "bits" and self.bit_logits == 1:
            return F.binary_cross_entropy_with_logits(out, y.float(), reduction=reduction)
        if self.kind == "bits":
            return F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction=reduction)
        return F.cross_entropy(out, y, reduction=reduction)

    def train_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._loss(self._forward(model, batch), batch["y"])

    def eval_batches(self) -> list[np.ndarray]:
        bs = self.data.test_batch_size or self.cfg.train.batch_size
        steps = self.data.test_steps_per_iter
        if steps == 0 or steps * bs >= self.num_test:
            idx = np.arange(self.num_test)
        else:
            seed = int(torch.randint(0, 2**31 - 1, (1,)).item())  # the run's generator: resumes draw the same
            idx = np.random.default_rng(seed).choice(self.num_test, size=steps * bs, replace=False)
        return [idx[i:i + bs] for i in range(0, len(idx), bs)]

    @evaluation
    def evaluate(self, model: nn.Module, device: torch.device, autocast) -> dict[str, float]:
        loss = count = correct = abs_err = sq_err = 0.0
        scores, labels = [], []
        for ib in self.eval_batches():
            batch = {k: v.to(device) for k, v in self.collate([self.example(TEST, int(i)) for i in ib]).items()}
            with autocast():
                out = self._forward(model, batch)
            y = batch["y"]
            loss += self._loss(out, y, reduction="sum").item()
            if self.kind == "regress":
                pred = out * self.target_std + self.target_mean
                abs_err += (pred - y).abs().sum().item()
                sq_err += ((pred - y) ** 2).sum().item()
                count += len(y)
                continue
            pred = (out > 0).long() if self.kind == "bits" and self.bit_logits == 1 else out.argmax(-1)
            correct += (pred == y).sum().item()
            count += y.numel()
            if self.report_mae:
                abs_err += (pred - y).abs().sum().item()
            if self.kind == "classify" and out.shape[-1] == 2:
                scores.append(out.softmax(-1)[:, 1].cpu())
                labels.append(y.cpu())
        if self.kind == "regress":
            return {"val_loss": loss / count, "val_mae": abs_err / count, "val_mse": sq_err / count}
        metrics = {"val_loss": loss / count, "val_accuracy": correct / count}
        if self.report_mae:
            metrics["val_mae"] = abs_err / count
        if scores:
            auc = auroc(torch.cat(scores).numpy(), torch.cat(labels).numpy())
            if auc is not None:
                metrics["val_auroc"] = auc
        return metrics

    def describe(self) -> dict[str, Any]:
        return {"train_examples": int(self.num_train), "test_examples": int(self.num_test), "tokens": int(self.seq_len),
                "objective": self.objective, "test_steps_per_iter": self.data.test_steps_per_iter, **self.io()}


def auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, tied scores share their mean rank); None with one class."""
    from scipy.stats import rankdata

    pos, neg = int((labels == 1).sum()), int((labels == 0).sum())
    if pos == 0 or neg == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[labels == 1].sum() - pos * (pos + 1) / 2.0) / (pos * neg))
