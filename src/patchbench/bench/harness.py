"""Measure one model the same way every time: training step, inference, memory, FLOPs, MFU.

    spec -> subject.build_subject (model, synthetic batch, loss)
         -> train: warm-up (untimed; compile happens here) -> W timed windows of S steps -> median, spread
         -> inference: the same, forward only under inference_mode
         -> FLOPs per sample (engine.flops: forward+backward for training), MFU against the peak

Precision, autocast, the optimizer, peak memory and the device label are the engine's (what
`patchbench train` uses), so a benchmark measures the step a run takes. The device is synchronised only
at the edges of each timed window. The CLI runs every model in a fresh process (worker.py) so that
allocator state and peaks never leak from one model into the next.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from patchbench.config import OptimConfig
from patchbench.engine.flops import infer_flops_per_sample, train_flops_per_sample
from patchbench.engine.measure import (
    current_memory_bytes,
    device_name,
    peak_memory_bytes,
    release_memory,
    reset_peak,
    resolve_device,
)
from patchbench.engine.optim import build_optimizer
from patchbench.engine.precision import autocast_factory, resolve_precision
from patchbench.errors import ConfigError
from patchbench.models.base import count_params

from .subject import BenchSpec, Subject, build_subject, loss_fn
from .timing import synchronizer, time_windows

BENCH_LR = 1e-4  # any: the step's cost does not depend on it


def bench_precision(dtype: str, device: torch.device) -> torch.dtype | None:
    """--dtype through the engine's precision rules (fp16 only on CUDA)."""
    return resolve_precision(dtype, device, key="--dtype")


def bench_optimizer(model: nn.Module, device: torch.device, fused: bool | None = None) -> torch.optim.Optimizer:
    """The engine's AdamW; fused where the engine would fuse it (CUDA), unless `fused` says otherwise."""
    choice = "auto" if fused is None else ("on" if fused else "off")
    return build_optimizer(model, OptimConfig(name="adamw", lr=BENCH_LR, fused=choice), device)


def train_step_fn(run: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                  autocast: Callable[[], AbstractContextManager], scaler: torch.amp.GradScaler) -> Callable[[], None]:
    """One training step (forward, fp32 loss, backward, AdamW step) on a fixed batch; no host sync."""
    def step() -> None:
        with autocast():
            loss = loss_fn(run, x, y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    return step


def prepare(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, channels_last: bool):
    """Model and batch on the device, in channels_last when asked (weights and 4-D input)."""
    model = model.to(device)
    x, y = x.to(device), y.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
    return model, x, y


def _phase_memory(prefix: str, device: torch.device) -> dict[str, int]:
    return {f"{prefix}_{k}_bytes": v for k, v in peak_memory_bytes(device).items()}


def measure(subject: Subject, device: torch.device, *, dtype: str, compile: bool, channels_last: bool,
            warmup: int, steps: int, windows: int, inference: bool, fused_adamw: bool | None = None) -> dict[str, Any]:
    """Train-step and inference speed, peak memory and FLOPs of one subject on `device`."""
    if compile and warmup < 1:
        raise ConfigError("--warmup must be at least 1 with --compile (the first call compiles)")
    amp = bench_precision(dtype, device)
    autocast = autocast_factory(device, amp)
    sync = synchronizer(device)

    release_memory(device)
    before = current_memory_bytes(device)
    model, x, y = prepare(subject.model, subject.x, subject.y, device, channels_last)
    run = torch.compile(model) if compile else model
    opt = bench_optimizer(model, device, fused_adamw)
    scaler = torch.amp.GradScaler("cuda", enabled=amp is torch.float16)
    train_step = train_step_fn(run, opt, x, y, autocast, scaler)

    def infer_step() -> None:
        with torch.inference_mode(), autocast():
            run(x)

    resettable = reset_peak(device)
    out: dict[str, Any] = {"params": count_params(model)["total"], "memory_before_bytes": before,
                           "memory_peak_kind": "CUDA allocator (max allocated / reserved)" if device.type == "cuda" else
                           ("process RSS high-water mark (VmHWM), reset per phase" if resettable else
                            "process peak RSS since start (no per-phase reset on this OS)")}
    model.train()
    tr = time_windows(train_step, warmup=warmup, steps=steps, windows=windows, sync=sync,
                      before_windows=lambda: reset_peak(device))
    B = x.shape[0]
    out.update(train_step_s=tr["median_s"], train_spread=tr["spread"], train_windows_s=tr["windows_s"],
               train_warmup_s=tr["warmup_s"], train_samples_per_s=B / tr["median_s"],
               train_items_per_s=B * subject.items_per_sample / tr["median_s"], **_phase_memory("train", device))
    if compile:
        out["compile_train_s"] = max(tr["warmup_s"][0] - tr["median_s"], 0.0)
    out["flops_train_per_sample"] = train_flops_per_sample(model, x, y, loss_fn=loss_fn, autocast=autocast)
    opt.state.clear()  # free the optimizer state before the inference phase
    model.zero_grad(set_to_none=True)
    release_memory(device)

    if inference:
        model.eval()
        inf = time_windows(infer_step, warmup=warmup, steps=steps, windows=windows, sync=sync,
                           before_windows=lambda: reset_peak(device))
        out.update(infer_step_s=inf["median_s"], infer_spread=inf["spread"], infer_samples_per_s=B / inf["median_s"],
                   infer_items_per_s=B * subject.items_per_sample / inf["median_s"], **_phase_memory("infer", device))
        if compile:
            out["compile_infer_s"] = max(inf["warmup_s"][0] - inf["median_s"], 0.0)
        out["flops_infer_per_sample"] = infer_flops_per_sample(model, x, autocast=autocast)
    subject.model = model.cpu()  # the caller frees or reuses it
    release_memory(device)
    return out


def add_mfu(row: dict[str, Any], peak: float | None) -> None:
    """Model FLOPs utilisation: counted FLOPs per sample × samples/s ÷ the device's peak."""
    for phase in ("train", "infer"):
        flops, rate = row.get(f"flops_{phase}_per_sample"), row.get(f"{phase}_samples_per_s")
        if flops is None or rate is None:
            continue
        row[f"{phase}_tflops_per_s"] = flops * rate / 1e12
        row[f"{phase}_mfu"] = flops * rate / peak if peak else None


def memory_key(device_type: str) -> str:
    return "train_peak_allocated_bytes" if device_type == "cuda" else "train_peak_rss_bytes"


def bench_model(spec: BenchSpec, subject: Subject | None = None) -> dict[str, Any]:
    """One model measured on synthetic data: a flat JSON-able row (worker.run_job adds the reference)."""
    from patchbench.bench.peaks import peak_flops

    device = resolve_device(spec.device)
    if subject is None:
        subject = build_subject(spec, device)
    if spec.peak:
        peak, peak_source = spec.peak
    else:
        peak, peak_source = peak_flops(device, spec.dtype, spec.peak_tflops)
    row: dict[str, Any] = {
        "model": spec.model, "modality": subject.modality, "batch_size": spec.batch_size, **subject.shape,
        "dtype": spec.dtype, "compile": spec.compile, "channels_last": spec.channels_last, "objective": spec.objective,
        "item": "tokens" if subject.modality == "tokens" else "images",
    }
    row.update(measure(subject, device, dtype=spec.dtype, compile=spec.compile, channels_last=spec.channels_last,
                       warmup=spec.warmup, steps=spec.steps, windows=spec.windows, inference=spec.inference))
    add_mfu(row, peak)
    row.update(peak_flops=peak, peak_source=peak_source, device=device.type, device_name=device_name(device),
               torch=torch.__version__, notes=subject.notes, pid=os.getpid(),
               config=dataclasses.asdict(subject.config) if dataclasses.is_dataclass(subject.config) else None)
    return row
