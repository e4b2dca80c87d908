"""Precision and autocast, shared by the trainer and the benchmark, so that both refuse the same things
with the same one-line reasons (`key` names the setting: train.precision or --dtype)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from patchbench.errors import ConfigError

DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(spec: str, device: torch.device, key: str = "train.precision") -> torch.dtype | None:
    """The autocast dtype for `spec` on `device`; None = fp32 (no autocast)."""
    if spec == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if spec not in DTYPES:
        raise ConfigError(f"{key}: {spec!r}; valid: auto, {', '.join(DTYPES)}")
    if spec == "fp16" and device.type != "cuda":
        raise ConfigError(f"{key}: fp16 needs a CUDA device; use fp32 or bf16 on CPU")
    return DTYPES[spec]


def autocast_factory(device: torch.device, dtype: torch.dtype | None) -> Callable[[], AbstractContextManager]:
    """A function returning a fresh autocast context (a no-op for fp32), as tasks' evaluate() expect."""
    def autocast() -> AbstractContextManager:
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)

    return autocast
