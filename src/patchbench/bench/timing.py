"""Timing that excludes warm-up: W windows of S calls, the device synchronised only at window edges."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from patchbench.errors import ConfigError


def synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    if device.type == "mps":
        return torch.mps.synchronize
    return lambda: None


def time_windows(fn: Callable[[], Any], *, warmup: int, steps: int, windows: int, sync: Callable[[], None],
                 before_windows: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run `fn` warmup times (each timed on its own, excluded), then `windows` timed windows of `steps`
    calls; the device is synchronised only at the edges of each window. Returns seconds per call."""
    if steps < 1 or windows < 1:
        raise ConfigError(f"--steps and --windows must be at least 1, got {steps} and {windows}")
    warm = []
    for _ in range(warmup):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        warm.append(time.perf_counter() - t0)
    if before_windows is not None:
        before_windows()
    per_call = []
    for _ in range(windows):
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        sync()
        per_call.append((time.perf_counter() - t0) / steps)
    med = statistics.median(per_call)
    return {"median_s": med, "spread": (max(per_call) - min(per_call)) / med if med > 0 else 0.0,
            "windows_s": per_call, "warmup_s": warm}


