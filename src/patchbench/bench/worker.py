"""One benchmark job in a fresh process: `python -m patchbench.bench.worker JOB.json RESULT.json`.

A job is {"kind": "bench" | "max_batch", "spec": BenchSpec fields, "reference": bool, ...}. The result
is the row (or {"error": one line}) written as JSON, so library chatter on stdout cannot corrupt it.
The CLI calls `run_job` directly with --in-process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from patchbench.bench.harness import add_mfu, bench_model, measure, memory_key
from patchbench.bench.subject import BenchSpec, Subject, build_subject
from patchbench.config import ConfigError
from patchbench.engine.measure import release_memory, resolve_device


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    spec = BenchSpec(**job["spec"])
    threads = torch.get_num_threads()
    if spec.threads:
        torch.set_num_threads(spec.threads)
    try:
        return _run(job, spec)
    finally:
        torch.set_num_threads(threads)  # --in-process: leave the caller's setting as it was


def _run(job: dict[str, Any], spec: BenchSpec) -> dict[str, Any]:
    if job["kind"] == "max_batch":
        from patchbench.bench.sweep import find_max_batch

        return find_max_batch(spec, limit=job.get("limit", 4096), budget_bytes=job.get("budget_bytes", 0))
    if job["kind"] == "profile":
        return profile_job(spec)
    if job["kind"] != "bench":
        raise ConfigError(f"bench job kind {job['kind']!r}; valid: bench, max_batch, profile")
    row = bench_model(spec)
    if job.get("reference"):
        row["references"] = reference_rows(spec, row, same_dtype=job.get("reference_dtype") == "same")
        row["reference"] = row["references"][0]  # the off-the-shelf implementation
    return row


def profile_job(spec: BenchSpec) -> dict[str, Any]:
    """The roofline account of one training step (bench/roofline.py) as rows and a markdown table."""
    from patchbench.bench.harness import bench_optimizer, prepare
    from patchbench.bench.peaks import peak_flops
    from patchbench.bench.roofline import copy_bandwidth, profile_step, profile_table
    from patchbench.engine.measure import device_name

    device = resolve_device(spec.device)
    if device.type != "cpu" or spec.dtype != "fp32" or spec.compile:
        raise ConfigError("--profile: the stage account runs eager fp32 on CPU; use --device cpu --dtype fp32 without --compile")
    if spec.objective != "last_token":
        raise ConfigError("--profile: the stage account follows the last_token objective; drop --objective causal_lm")
    subject = build_subject(spec, device)
    model, x, y = prepare(subject.model, subject.x, subject.y, device, spec.channels_last)
    peak, source = spec.peak if spec.peak else peak_flops(device, spec.dtype, spec.peak_tflops)
    bandwidth = copy_bandwidth()
    try:
        rows = profile_step(spec.model, model, x, y, peak=peak, bandwidth=bandwidth, steps=max(spec.steps, 3),
                            optimizer=bench_optimizer(model, device))
    except ValueError as e:
        raise ConfigError(f"--profile: {e}") from None
    return {"model": spec.model, "stages": rows, "peak_flops": peak, "peak_source": source, "bandwidth": bandwidth,
            "device_name": device_name(device), "torch": torch.__version__,
            "table": profile_table(rows, peak, bandwidth, spec.batch_size)}


def reference_rows(spec: BenchSpec, ours: dict[str, Any], same_dtype: bool = False) -> list[dict[str, Any]]:
    """Every reference of the model (GPT-2: transformers' model, then the nanoGPT-style step), one at a time."""
    from patchbench.bench.reference import n_references

    return [reference_row(spec, ours, same_dtype, index=i) for i in range(n_references(spec.model))]


def reference_row(spec: BenchSpec, ours: dict[str, Any], same_dtype: bool = False, index: int = 0) -> dict[str, Any]:
    """Reference number `index` measured in this process on the same inputs, plus ours ÷ reference ratios.
    same_dtype: run it under the same autocast dtype as ours (default: fp32, as its users run it)."""
    from patchbench.bench.reference import build_references

    device = resolve_device(spec.device)
    subject = build_subject(spec, device)  # same seed: the same weights and inputs as the measured model
    ref, desc, same_weights = build_references(spec.model, subject.model, subject.config, subject.modality)[index]
    if ref is None:
        return {"name": None, "why": desc}
    if same_dtype and spec.dtype != "fp32":
        desc = desc.replace("fp32", spec.dtype)
    out: dict[str, Any] = {"name": desc, "max_abs_diff": None}
    if same_weights:  # check it computes the same function
        x = subject.x[: min(2, len(subject.x))]
        subject.model.eval()
        ref.eval()
        with torch.no_grad():
            out["max_abs_diff"] = float((subject.model(x) - ref(x)).abs().max())
    ref_subject = Subject(desc, ref, subject.x, subject.y, subject.modality, subject.items_per_sample, subject.shape)
    del subject
    release_memory(device)
    try:
        ref_dtype = spec.dtype if same_dtype else "fp32"
        row = measure(ref_subject, device, dtype=ref_dtype, compile=False, channels_last=False, warmup=spec.warmup,
                      steps=spec.steps, windows=spec.windows, inference=spec.inference, fused_adamw=False)
    except torch.OutOfMemoryError:  # e.g. the seed's full readout at a batch patchbench's PACING fits
        del ref_subject
        release_memory(device)
        return {**out, "name": None, "why": f"{desc}: out of memory at batch {spec.batch_size}"}
    add_mfu(row, ours.get("peak_flops") if spec.dtype == ref_dtype else None)
    out.update(row)
    out["train_speedup"] = ours["train_samples_per_s"] / row["train_samples_per_s"]
    if spec.inference:
        out["infer_speedup"] = ours["infer_samples_per_s"] / row["infer_samples_per_s"]
    key = memory_key(device.type)
    out["memory_ratio"] = ours[key] / row[key]
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m patchbench.bench.worker JOB.json RESULT.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text())
    try:
        result = run_job(job)
    except ConfigError as e:
        result = {"error": str(e), "error_kind": "config"}
    except torch.OutOfMemoryError:
        result = {"error": f"out of memory at batch {job['spec'].get('batch_size')}", "error_kind": "oom"}
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the bench command reports it, once
        return 130
    Path(argv[1]).write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
