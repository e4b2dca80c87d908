"""Measure one model the same way every time: training step, inference, memory, FLOPs, MFU.

    spec -> configure (vocab, n_positions / image size) -> Subject (model, synthetic batch, loss)
         -> train: warm-up (untimed; compile happens here) -> W timed windows of S steps -> median, spread
         -> inference: the same, forward only under inference_mode
         -> FLOPs per sample with FlopCounterMode (forward+backward for training), MFU against the peak

The device is synchronised only at the edges of each timed window. Memory: CUDA max allocated and
reserved, reset before each phase's timed windows; CPU the process's peak RSS (VmHWM), reset through
/proc/self/clear_refs before each phase where Linux allows it. The CLI runs every model in a fresh
process (worker.py) so that allocator state and peaks never leak from one model into the next.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import gc
import math
import os
import platform
import statistics
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, flop_registry, sdpa_backward_flop_count, sdpa_flop_count

from patchbench import registry
from patchbench.config import ConfigError
from patchbench.engine.measure import device_name, resolve_device
from patchbench.models.base import count_params

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
MODALITIES = ("tokens", "image")


@dataclass
class BenchSpec:
    model: str
    overrides: dict[str, Any] = field(default_factory=dict)  # model config keys
    batch_size: int = 2
    seq_len: int = 0  # tokens models; 0 = the model's n_positions
    image_size: int = 0  # image models; 0 = the model's image_size
    dtype: str = "fp32"  # fp32 | bf16 | fp16 (autocast)
    compile: bool = False
    channels_last: bool = False
    warmup: int = 3
    steps: int = 5  # steps per timed window
    windows: int = 3
    inference: bool = True
    device: str = "auto"
    vocab_size: int = 50257  # used where the config says 0 (= "from the tokenizer")
    num_classes: int = 10  # used where an image config says 0 (= "from the task")
    peak: list | None = None  # [FLOP/s, source] measured once by the caller (CPU probe)
    peak_tflops: float = 0.0  # user override of the device peak
    threads: int = 0  # torch CPU threads; 0 = torch's default
    seed: int = 0


@dataclass
class Subject:
    """A model plus one synthetic batch and the loss the training step minimises."""

    name: str
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    modality: str
    items_per_sample: int  # tokens per sample (1 for images)
    shape: dict[str, int]  # seq_len or image_size
    notes: list[str] = field(default_factory=list)
    config: Any = None


# --------------------------------------------------------------------------------------------------
# configuration: a concrete vocab, n_positions that fits the sequence, the image size


def configure(spec: BenchSpec) -> tuple[Any, list[str]]:
    """The model config the benchmark builds, and notes on what was adapted and why."""
    entry = registry.get_model(spec.model)
    if entry.modality not in MODALITIES:
        raise ConfigError(f"bench: model {spec.model!r} eats {entry.modality!r}; bench supports {', '.join(MODALITIES)} models")
    values = dict(spec.overrides)
    notes: list[str] = []
    base = registry.model_config(spec.model, **values)
    if entry.modality == "tokens":
        if spec.image_size:
            raise ConfigError(f"--image-size: model {spec.model!r} eats tokens; use --seq-len")
        if getattr(base, "vocab_size", None) == 0:
            values["vocab_size"] = spec.vocab_size
            notes.append(f"vocab_size 0 (from tokenizer) -> {spec.vocab_size}")
        if spec.seq_len:
            return fit_positions(spec.model, values, spec.seq_len, notes)
        return registry.model_config(spec.model, **values), notes
    if spec.seq_len:
        raise ConfigError(f"--seq-len: model {spec.model!r} eats images; use --image-size")
    if getattr(base, "num_classes", None) == 0:
        values["num_classes"] = spec.num_classes
        notes.append(f"num_classes 0 (from the task) -> {spec.num_classes}")
    if spec.image_size:
        if not hasattr(base, "image_size"):
            raise ConfigError(f"--image-size: model {spec.model!r} has no image_size in its config")
        values["image_size"] = spec.image_size
    return registry.model_config(spec.model, **values), notes


def fit_positions(name: str, values: dict, seq_len: int, notes: list[str]) -> tuple[Any, list[str]]:
    """n_positions follows --seq-len. A model whose n_positions fixes a grid (PACING: ceil(sqrt(n))² cells,
    image side divisible by 32, n_embd a multiple of the final cells) gets the smallest valid square
    grid that holds seq_len tokens; the model pads the window to its grid, as it does in training."""
    if "n_positions" in values:
        if values["n_positions"] < seq_len:
            raise ConfigError(f"--seq-len {seq_len} exceeds n_positions={values['n_positions']} set with --set; raise it or drop it")
        return registry.model_config(name, **values), notes
    try:
        return registry.model_config(name, **{**values, "n_positions": seq_len}), notes
    except ConfigError as e:
        first_error = str(e)
    g = math.isqrt(seq_len - 1) + 1
    for side in range(g, 4 * g + 1):
        try:
            cfg = registry.model_config(name, **{**values, "n_positions": side * side})
        except ConfigError:
            continue
        px = f", {side * cfg.patch}px image" if hasattr(cfg, "patch") else ""
        notes.append(f"n_positions {seq_len} is not valid ({first_error}); using n_positions {side * side} "
                     f"({side}x{side} grid{px}) and {seq_len}-token windows padded by the model")
        return cfg, notes
    raise ConfigError(f"--seq-len {seq_len}: no valid n_positions for {name} from {seq_len} to {(4 * g) ** 2} ({first_error})")


def build_subject(spec: BenchSpec, device: torch.device) -> Subject:
    cfg, notes = configure(spec)
    modality = registry.get_model(spec.model).modality
    torch.manual_seed(spec.seed)
    model = registry.create_model(cfg)
    if modality == "image" and not getattr(cfg, "image_size", 0):
        size = model_image_size(model)
        notes.append(f"image_size 0 (from the task) -> {size} (the model's default)")
        if hasattr(cfg, "image_size"):
            cfg = dataclasses.replace(cfg, image_size=size)
        else:
            cfg = types.SimpleNamespace(**vars(cfg), image_size=size)
    x, y, shape, items = synthetic_batch(cfg, modality, spec.batch_size, spec.seq_len)
    return Subject(spec.model, model, x, y, modality, items, shape, notes, cfg)


def model_image_size(model: nn.Module, fallback: int = 224) -> int:
    """The input side a model was built for: its own attribute, timm's pretrained config, else 224."""
    if getattr(model, "image_size", 0):
        return int(model.image_size)
    size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
    return int(size[-1]) if size else fallback


def synthetic_batch(cfg: Any, modality: str, batch: int, seq_len: int = 0, seed: int = 1):
    """Token ids and next-token targets, or (B, C, S, S) images and class targets; same for every model."""
    g = torch.Generator().manual_seed(seed)
    if modality == "tokens":
        T = seq_len or cfg.n_positions
        x = torch.randint(0, cfg.vocab_size, (batch, T), generator=g)  # (B, T)
        y = torch.randint(0, cfg.vocab_size, (batch,), generator=g)  # (B,) the token after the window
        return x, y, {"seq_len": T}, T
    S, C = cfg.image_size, getattr(cfg, "in_chans", 0) or 3
    n_cls = getattr(cfg, "num_classes", 0)
    if not n_cls:
        raise ConfigError(f"model {cfg.name!r}: num_classes is 0; set it with --set num_classes=N")
    x = torch.randn(batch, C, S, S, generator=g)  # (B, C, S, S)
    y = torch.randint(0, n_cls, (batch,), generator=g)  # (B,)
    return x, y, {"image_size": S}, 1


# --------------------------------------------------------------------------------------------------
# timing


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


# --------------------------------------------------------------------------------------------------
# memory


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def release_memory(device: torch.device) -> None:
    """Give freed memory back (CUDA cache; glibc arenas) so the next phase's peak starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif (libc := _libc()) is not None:
        libc.malloc_trim(0)


def _proc_status(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new peak. CPU: Linux resets VmHWM to the current RSS on `echo 5 > clear_refs`."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def current_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    rss = _proc_status("VmRSS")
    if rss is None:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return rss


def peak_memory(device: torch.device) -> dict[str, int]:
    if device.type == "cuda":
        return {"peak_allocated_bytes": torch.cuda.max_memory_allocated(device),
                "peak_reserved_bytes": torch.cuda.max_memory_reserved(device)}
    hwm = _proc_status("VmHWM")
    if hwm is None:
        import resource
        import sys

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        hwm = rss if sys.platform == "darwin" else rss * 1024
    return {"peak_rss_bytes": hwm}


# --------------------------------------------------------------------------------------------------
# FLOPs


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape) * 4 // 5


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """Each needed gradient (input, weight) costs what the forward convolution did. torch's own formula
    ignores `groups` for the weight gradient and so counts a depthwise conv's backward `channels` times
    over (ConvNeXt's 7×7 depthwise convs: ~30× too many FLOPs, MFU far above 100%)."""
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _without_recompute(formula: Callable[..., int]) -> Callable[..., int]:
    """torch counts a fused attention backward as 5 matmuls, the recomputed QKᵀ included; model FLOPs
    (what MFU divides) count the 4 that eager attention's backward does too, so SDPA and eager agree."""
    def count(*args, **kwargs) -> int:
        return formula(*args, **kwargs) * 4 // 5

    count._get_raw = True  # `formula` already unpacks shapes
    return count


def _flop_formulas() -> dict:
    aten = torch.ops.aten
    formulas = {  # FlopCounterMode knows the CUDA attention kernels but not the CPU one SDPA uses
        aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flop,
        aten.convolution_backward: _conv_backward_flop,
    }
    for name in ("_scaled_dot_product_flash_attention_backward", "_scaled_dot_product_efficient_attention_backward",
                 "_scaled_dot_product_cudnn_attention_backward", "_flash_attention_backward", "_efficient_attention_backward"):
        op = getattr(aten, name, None)
        if op is not None and op in flop_registry:
            formulas[op] = _without_recompute(flop_registry[op])
    return formulas


def count_flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor, train: bool, autocast=contextlib.nullcontext) -> int:
    """FLOPs of one batch: forward (+ backward when `train`), as FlopCounterMode counts them (2 per
    multiply-add in matmuls, convolutions and attention; the full T×T attention even when causal; no
    recomputation), so the same model counts the same whatever kernels run it."""
    was = model.training
    model.train(train)
    with FlopCounterMode(display=False, custom_mapping=_flop_formulas()) as counter:
        if train:
            with autocast():
                loss = F.cross_entropy(model(x).float(), y)
            loss.backward()
        else:
            with torch.no_grad(), autocast():
                model(x)
    model.zero_grad(set_to_none=True)
    model.train(was)
    return counter.get_total_flops()


# --------------------------------------------------------------------------------------------------
# one measurement


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    if dtype == "fp16" and device.type != "cuda":
        raise ConfigError("--dtype fp16 needs a CUDA device; use fp32 or bf16 on CPU")
    return DTYPES[dtype]


def measure(subject: Subject, device: torch.device, *, dtype: str, compile: bool, channels_last: bool,
            warmup: int, steps: int, windows: int, inference: bool, fused_adamw: bool | None = None) -> dict[str, Any]:
    """Train-step and inference speed, peak memory and FLOPs of one subject on `device`."""
    if compile and warmup < 1:
        raise ConfigError("--warmup must be at least 1 with --compile (the first call compiles)")
    amp = resolve_dtype(dtype, device)
    sync = synchronizer(device)

    def autocast():
        return torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()

    release_memory(device)
    before = current_memory(device)
    model = subject.model.to(device)
    x, y = subject.x.to(device), subject.y.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
    run = torch.compile(model) if compile else model
    fused = (device.type == "cuda") if fused_adamw is None else fused_adamw
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=fused or None)
    scaler = torch.amp.GradScaler("cuda", enabled=amp is torch.float16)

    def train_step():
        with autocast():
            loss = F.cross_entropy(run(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    def infer_step():
        with torch.inference_mode(), autocast():
            run(x)

    resettable = reset_peak_memory(device)
    out: dict[str, Any] = {"params": count_params(model)["total"], "memory_before_bytes": before,
                           "memory_peak_kind": "CUDA allocator (max allocated / reserved)" if device.type == "cuda" else
                           ("process RSS high-water mark (VmHWM), reset per phase" if resettable else
                            "process peak RSS since start (no per-phase reset on this OS)")}
    model.train()
    tr = time_windows(train_step, warmup=warmup, steps=steps, windows=windows, sync=sync,
                      before_windows=lambda: reset_peak_memory(device))
    mem = peak_memory(device)
    B = x.shape[0]
    out.update(train_step_s=tr["median_s"], train_spread=tr["spread"], train_windows_s=tr["windows_s"],
               train_warmup_s=tr["warmup_s"], train_samples_per_s=B / tr["median_s"],
               train_items_per_s=B * subject.items_per_sample / tr["median_s"],
               **{f"train_{k}": v for k, v in mem.items()})
    if compile:
        out["compile_train_s"] = max(tr["warmup_s"][0] - tr["median_s"], 0.0)
    out["flops_train_per_sample"] = count_flops(model, x, y, train=True, autocast=autocast) / B
    opt.state.clear()  # free the optimizer state before the inference phase
    model.zero_grad(set_to_none=True)
    release_memory(device)

    if inference:
        model.eval()
        inf = time_windows(infer_step, warmup=warmup, steps=steps, windows=windows, sync=sync,
                           before_windows=lambda: reset_peak_memory(device))
        mem = peak_memory(device)
        out.update(infer_step_s=inf["median_s"], infer_spread=inf["spread"], infer_samples_per_s=B / inf["median_s"],
                   infer_items_per_s=B * subject.items_per_sample / inf["median_s"],
                   **{f"infer_{k}": v for k, v in mem.items()})
        if compile:
            out["compile_infer_s"] = max(inf["warmup_s"][0] - inf["median_s"], 0.0)
        out["flops_infer_per_sample"] = count_flops(model, x, y, train=False, autocast=autocast) / B
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


def device_label(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (lscpu's) and torch's thread count."""
    if device.type != "cpu":
        return device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


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
        "dtype": spec.dtype, "compile": spec.compile, "channels_last": spec.channels_last,
        "item": "tokens" if subject.modality == "tokens" else "images",
    }
    row.update(measure(subject, device, dtype=spec.dtype, compile=spec.compile, channels_last=spec.channels_last,
                       warmup=spec.warmup, steps=spec.steps, windows=spec.windows, inference=spec.inference))
    add_mfu(row, peak)
    row.update(peak_flops=peak, peak_source=peak_source, device=device.type, device_name=device_label(device),
               torch=torch.__version__, notes=subject.notes, pid=os.getpid(),
               config=dataclasses.asdict(subject.config) if dataclasses.is_dataclass(subject.config) else None)
    return row
