"""Measurements recorded in every run's summary and every benchmark row: memory and device facts.

Peak memory: CUDA max allocated and reserved by this process's allocator; CPU the process's peak RSS
(VmHWM), which Linux resets to the current RSS on `echo 5 > /proc/self/clear_refs`, so that a phase's
peak can start clean (elsewhere: the peak since the process started).
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import resource
import sys
from pathlib import Path

import torch


def _proc_status(key: str) -> int | None:
    """A size from /proc/self/status in bytes (VmRSS, VmHWM), or None where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _ru_maxrss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def peak_memory_bytes(device: torch.device) -> dict[str, int]:
    """CUDA: max allocated / reserved by this process's allocator. CPU: peak RSS of this process
    since the last reset_peak (VmHWM), else since it started."""
    if device.type == "cuda":
        return {"peak_allocated": torch.cuda.max_memory_allocated(device),
                "peak_reserved": torch.cuda.max_memory_reserved(device)}
    hwm = _proc_status("VmHWM")
    return {"peak_rss": hwm if hwm is not None else _ru_maxrss_bytes()}


def reset_peak(device: torch.device) -> bool:
    """Start a new peak; False where the OS cannot reset the CPU peak (then it counts from the start)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def current_memory_bytes(device: torch.device) -> int:
    """CUDA: allocated now. CPU: resident set size now (the peak so far where /proc is missing)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    rss = _proc_status("VmRSS")
    return rss if rss is not None else _ru_maxrss_bytes()


def release_memory(device: torch.device) -> None:
    """Give freed memory back (CUDA cache; glibc arenas) so the next phase's peak starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def cpu_model_name() -> str:
    """The CPU's model name as lscpu reports it (from /proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name with its core count and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple MPS ({platform.machine()})"
    threads = torch.get_num_threads()
    return f"{cpu_model_name()} CPU, {os.cpu_count()} cores, {threads} torch thread{'s' if threads != 1 else ''}"


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
