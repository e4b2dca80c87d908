"""`--sweep KEY V1,V2,...` and `--max-batch`: the largest batch that fits, and curves against a knob.

Largest batch: doubling from 1 until a batch does not fit, then bisection between the last fit and the
first failure. "Fits" means two training steps (the first allocates the optimizer state) run without
CUDA running out of memory, or, on CPU, with the process's peak RSS within the memory budget (CPU
memory never says no; it swaps). On CPU a batch whose peak is predicted, by a straight line through
the last two measured fits, to exceed 1.5× the budget is not tried, so the search cannot swamp a
shared machine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from patchbench.bench.harness import bench_optimizer, bench_precision, prepare, train_step_fn
from patchbench.bench.subject import BenchSpec, build_subject, synthetic_batch
from patchbench.config import ConfigError
from patchbench.engine.measure import current_memory_bytes, peak_memory_bytes, release_memory, reset_peak, resolve_device
from patchbench.engine.precision import autocast_factory

SWEEP_KEYS = {"seq-len": "seq_len", "image-size": "image_size", "batch-size": "batch_size"}


def parse_sweep(key: str, values: str) -> tuple[str, list[int]]:
    if key not in SWEEP_KEYS:
        raise ConfigError(f"--sweep {key!r}: valid keys: {', '.join(SWEEP_KEYS)}")
    try:
        vals = [int(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--sweep {key} {values!r}: expected comma-separated integers, e.g. 256,512,1024") from None
    if not vals or min(vals) < 1:
        raise ConfigError(f"--sweep {key} {values!r}: expected positive integers, e.g. 256,512,1024")
    return SWEEP_KEYS[key], vals


def default_budget_bytes() -> int:
    """Half of the memory the kernel says is available now (Linux), else 4 GiB."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    return 4 * 2**30


def largest_fitting(fits: Callable[[int], bool], limit: int) -> tuple[int, bool]:
    """Largest b in [1, limit] with fits(b), for a monotone `fits`: doubling, then bisection.
    Returns (b, limit_reached); b = 0 when not even 1 fits."""
    lo, hi, b = 0, None, 1
    while hi is None:
        b = min(b, limit)
        if not fits(b):
            hi = b
        elif b == limit:
            return limit, True
        else:
            lo, b = b, b * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo, False


def find_max_batch(spec: BenchSpec, limit: int = 4096, budget_bytes: int = 0) -> dict[str, Any]:
    """Largest training batch in [1, limit] that fits; returns the trials made."""
    device = resolve_device(spec.device)
    amp = bench_precision(spec.dtype, device)
    autocast = autocast_factory(device, amp)
    if device.type != "cuda" and budget_bytes <= 0:
        budget_bytes = default_budget_bytes()
    subject = build_subject(dataclasses.replace(spec, batch_size=1), device)
    model, _, _ = prepare(subject.model, subject.x, subject.y, device, spec.channels_last)
    run = torch.compile(model) if spec.compile else model
    opt = bench_optimizer(model, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp is torch.float16)
    model.train()
    trials: list[dict[str, Any]] = []

    def predicted(b: int) -> float | None:
        fits = [t for t in trials if t["fits"] and t.get("peak")]
        if device.type == "cuda" or len(fits) < 2:
            return None
        (b0, m0), (b1, m1) = [(t["batch"], t["peak"]) for t in fits[-2:]]
        return m1 + (m1 - m0) / max(b1 - b0, 1) * (b - b1)

    def fits(b: int) -> bool:
        guess = predicted(b)
        if guess is not None and guess > 1.5 * budget_bytes:
            trials.append({"batch": b, "fits": False, "predicted_peak": guess})
            return False
        x, y, _, _ = synthetic_batch(subject.config, subject.modality, b, spec.seq_len, causal=spec.objective == "causal_lm")
        _, x, y = prepare(model, x, y, device, spec.channels_last)
        release_memory(device)
        reset_peak(device)
        step = train_step_fn(run, opt, x, y, autocast, scaler)
        try:
            for _ in range(2):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            peak = next(iter(peak_memory_bytes(device).values()))
            ok = device.type == "cuda" or peak <= budget_bytes
        except torch.OutOfMemoryError:
            peak, ok = None, False
        finally:
            opt.zero_grad(set_to_none=True)
            del x, y, step
            release_memory(device)
        trials.append({"batch": b, "fits": ok, "peak": peak})
        return ok

    lo, limit_reached = largest_fitting(fits, limit)
    result = {"max_batch": lo, "limit_reached": limit_reached, "trials": trials,
              "budget_bytes": budget_bytes if device.type != "cuda" else None,
              "baseline_bytes": current_memory_bytes(device), "notes": subject.notes}
    if lo == 0:
        result["error"] = (f"{spec.model}: not even batch 1 fits"
                           + (f" in the {budget_bytes / 2**30:.1f} GiB budget" if budget_bytes else ""))
    return result


# --------------------------------------------------------------------------------------------------
# curves


def plot_sweep(rows: list[dict[str, Any]], key: str, path: Path) -> Path:
    """samples/s, tokens/s (or images/s) and peak memory against the swept value, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r]
    models = list(dict.fromkeys(r["model"] for r in ok))
    item = "tokens" if any(r.get("item") == "tokens" for r in ok) else "images"
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = [("train_samples_per_s", "train samples/s"), ("train_items_per_s", f"train {item}/s"), ("memory_mib", "peak memory (MiB)")]
    for name in models:
        pts = sorted((r[key], r) for r in ok if r["model"] == name)
        xs = [p[0] for p in pts]
        for ax, (field, label) in zip(axes, panels, strict=True):
            ys = [p[1][field] for p in pts]
            (line,) = ax.plot(xs, ys, marker="o", label=name)
            refs = [(p[0], p[1]["reference"][field]) for p in pts if p[1].get("reference", {}).get(field) is not None]
            if refs:
                ax.plot([r[0] for r in refs], [r[1] for r in refs], marker="x", linestyle="--", color=line.get_color(),
                        label=f"{name}: {pts[0][1]['reference']['name'].split(' (')[0]}")
            for value, r in pts:  # say where the model's n_positions is not the swept length (PACING's grid)
                n = (r.get("config") or {}).get("n_positions")
                if key == "seq_len" and n and n != value:
                    ax.annotate(f"n_positions {n}", (value, r[field]), fontsize=7, textcoords="offset points", xytext=(4, 4))
            ax.set_xlabel(key.replace("_", " "))
            ax.set_ylabel(label)
            ax.set_xscale("log", base=2)
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    dev = ok[0]["device_name"] if ok else ""
    fig.suptitle(f"patchbench bench sweep over {key.replace('_', ' ')} — {dev}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
