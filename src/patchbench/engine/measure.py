"""Measurements recorded in every run's summary: memory and device facts."""

from __future__ import annotations

import platform
import resource
import sys

import torch


def peak_memory_bytes(device: torch.device) -> dict[str, int]:
    """CUDA: max allocated / reserved by this process's allocator. CPU: peak RSS of this process."""
    if device.type == "cuda":
        return {"peak_allocated": torch.cuda.max_memory_allocated(device),
                "peak_reserved": torch.cuda.max_memory_reserved(device)}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_rss": rss if sys.platform == "darwin" else rss * 1024}


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU ({torch.get_num_threads()} threads)"


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        from patchbench.errors import ConfigError

        raise ConfigError(f"train.device: {spec!r}; valid: auto, cpu, cuda, cuda:N, mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        from patchbench.errors import ConfigError

        raise ConfigError(f"train.device: {spec!r} but no CUDA device is available; use auto or cpu")
    return dev
