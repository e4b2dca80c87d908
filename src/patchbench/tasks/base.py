"""The task contract the engine drives. A task = data + input spec + loss + metrics.

    task = build_task(run_cfg)           # registry builder; reads and caches its data
    model_cfg = task.prepare(model_cfg)  # fill data-dependent fields (vocab size, classes, ...)
    task.num_train                       # training examples per epoch
    task.batches(index_batches)          # iterator of batches (dicts of CPU tensors), in that order
    task.train_loss(model, batch)        # scalar loss of the training objective
    task.evaluate(model, device)         # {"val_loss": ..., other metrics}; held-out data only, under evaluating()
    task.after_training(model, device, run)  # extras written into the run directory (default: none)

Batches are chosen by the engine as index arrays so that order, resume and DDP sharding are the
engine's business, not each task's.
"""

from __future__ import annotations

import contextlib
import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from patchbench.errors import ConfigError
from patchbench.rundir import RunDir


class Task(ABC):
    objectives: tuple[str, ...] = ()
    objective: str = ""
    primary_metric: str = "val_loss"  # lower is better unless higher_is_better
    higher_is_better: bool = False

    num_train: int = 0

    def resolve_objective(self, cfg) -> str:
        """cfg.task.objective, or the task's first (default) objective; anything else is a ConfigError."""
        objective = cfg.task.objective or self.objectives[0]
        if objective not in self.objectives:
            raise ConfigError(f"task.objective: {objective!r}; valid objectives for {cfg.task.name}: {', '.join(self.objectives)}")
        return objective

    def prepare(self, model_cfg: Any) -> Any:
        return model_cfg

    def check_model(self, model: nn.Module) -> None:
        """Raise ConfigError if the model cannot serve this task's objective."""

    @abstractmethod
    def batches(self, index_batches: list[np.ndarray]) -> Iterator[dict[str, torch.Tensor]]:
        ...

    @abstractmethod
    def train_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ...

    @abstractmethod
    def evaluate(self, model: nn.Module, device: torch.device, autocast) -> dict[str, float]:
        ...

    def items_per_example(self) -> int:
        """Tokens per example for tokens/s (1 for images)."""
        return 1

    def describe(self) -> dict[str, Any]:
        return {}

    def sample(self, model: nn.Module, device: torch.device, prompt: str, tokens: int, top_k: int, seed: int) -> str | None:
        return None

    def after_training(self, model: nn.Module, device: torch.device, run: RunDir) -> None:
        """Task extras written into the run directory once training finished (e.g. a grid of predictions)."""


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluation mode without gradients; the model's previous mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    nb = device.type == "cuda"
    return {k: v.to(device, non_blocking=nb) for k, v in batch.items()}


def evaluation(method: Callable) -> Callable:
    """Decorate a task method `(self, model, ...)` to run under evaluating(model), as every evaluate() does."""
    @functools.wraps(method)
    def wrapper(self, model: nn.Module, *args, **kwargs):
        with evaluating(model):
            return method(self, model, *args, **kwargs)

    return wrapper
