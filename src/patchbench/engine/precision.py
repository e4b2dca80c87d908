"""Precision and autocast, shared by the trainer and the benchmark."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from patchbench.errors import ConfigError


def resolve_precision(spec: str, device: torch.device) -> torch.dtype | None:
    """train.precision -> the autocast dtype; None = fp32 (no autocast)."""
    if spec == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    table = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if spec not in table:
        raise ConfigError(f"train.precision: {spec!r}; valid: auto, fp32, bf16, fp16")
    if spec == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision: fp16 needs a CUDA device; use fp32 or bf16 on CPU")
    return table[spec]


def autocast_factory(device: torch.device, dtype: torch.dtype | None) -> Callable[[], AbstractContextManager]:
    """A function returning a fresh autocast context (a no-op for fp32), as tasks' evaluate() expect."""
    def autocast() -> AbstractContextManager:
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)

    return autocast
