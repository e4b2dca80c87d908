"""`patchbench bench MODEL [MODEL ...]`: arguments, one fresh process per measurement, tables and files.

    patchbench bench gpt2 pacing --batch-size 8 --seq-len 64 --dtype bf16 --reference \\
        --set vocab_size=2048 --set gpt2.n_embd=192 --set gpt2.n_layer=4 --set pacing.depths=[2,2,7,1]
    patchbench bench gpt2 --sweep seq-len 256,512,1024 --max-batch

Writes OUT/bench.json (meta + one row per measurement), OUT/bench.md (the printed tables) and, for a
sweep, OUT/sweep.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from patchbench.config import ConfigError
from patchbench.recipe import parse_override


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", help="registered model names (see patchbench list)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=0, help="tokens per sample; n_positions follows it (default: the model's n_positions)")
    p.add_argument("--image-size", type=int, default=0, help="image side in pixels (default: the model's image_size)")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast precision of patchbench's models")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (compile time is reported separately)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format for weights and image input")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice); 1 is steadier on a busy machine")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before the timed windows")
    p.add_argument("--steps", type=int, default=5, help="steps per timed window")
    p.add_argument("--windows", type=int, default=3, help="timed windows (median and spread over them)")
    p.add_argument("--set", action="append", default=[], metavar="[MODEL.]KEY=VALUE",
                   help="model config override for every model (n_layer=4) or one (gpt2.n_layer=4)")
    p.add_argument("--vocab-size", type=int, default=50257, help="vocabulary where a config says 0 (= from the tokenizer)")
    p.add_argument("--num-classes", type=int, default=10, help="classes where an image config says 0 (= from the task)")
    p.add_argument("--objective", choices=["last_token", "causal_lm"], default="last_token",
                   help="tokens models: loss on the token after the window, or on every position (causal LMs)")
    p.add_argument("--reference", action="store_true",
                   help="also measure the off-the-shelf implementation(s), same process and inputs (GPT-2: transformers and nanoGPT-style)")
    p.add_argument("--reference-dtype", choices=["fp32", "same"], default="fp32",
                   help="the reference's precision: fp32 (as its users run it) or the same autocast as --dtype")
    p.add_argument("--no-inference", action="store_true", help="skip the inference measurement")
    p.add_argument("--profile", action="store_true",
                   help="instead of timing: a roofline account of the training step per stage "
                        "(FLOPs, bytes, profiler time; CPU fp32) in OUT/profile.md")
    p.add_argument("--sweep", nargs=2, metavar=("KEY", "VALUES"), help="seq-len | image-size | batch-size and comma-separated values")
    p.add_argument("--max-batch", action="store_true", help="find the largest batch that fits (per sweep point) and measure at it")
    p.add_argument("--max-batch-limit", type=int, default=4096)
    p.add_argument("--mem-budget", type=float, default=0.0, help="CPU: GiB of peak RSS a batch may use (default: half of MemAvailable)")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for MFU (default: GPU table or CPU matmul probe)")
    p.add_argument("--in-process", action="store_true", help="measure in this process (tests); default: a fresh process per model")
    p.add_argument("--out", default="bench", help="folder for bench.json, bench.md (and sweep.png)")


# --------------------------------------------------------------------------------------------------
# overrides: --set key=value for every model, --set MODEL.key=value for one


def model_overrides(sets: list[str], models: list[str]) -> dict[str, dict[str, Any]]:
    per: dict[str, dict[str, Any]] = {m: {} for m in models}
    for text in sets:
        node = parse_override(text)
        (head, value), = node.items()
        if head == "model" and isinstance(value, dict):  # model.n_layer=4 = n_layer=4
            (head, value), = value.items()
        if head in per and isinstance(value, dict):
            (key, v), = value.items()
            if isinstance(v, dict):
                raise ConfigError(f"--set {text!r}: model config keys are not nested; e.g. {head}.n_layer=4")
            per[head][key] = v
        elif isinstance(value, dict):
            raise ConfigError(f"--set {text!r}: {head!r} is not one of the benchmarked models ({', '.join(models)}); "
                              "use KEY=VALUE or MODEL.KEY=VALUE")
        else:
            for m in models:
                per[m][head] = value
    return per


# --------------------------------------------------------------------------------------------------
# running jobs


def run_job_somewhere(job: dict[str, Any], in_process: bool) -> dict[str, Any]:
    """Run one job in a fresh `python -m patchbench.bench.worker` process (or here with --in-process)."""
    import torch

    from patchbench.bench.worker import run_job

    if in_process:
        try:
            return run_job(job)
        except ConfigError as e:
            return {"error": str(e), "error_kind": "config"}
        except torch.OutOfMemoryError:
            return {"error": f"out of memory at batch {job['spec'].get('batch_size')}", "error_kind": "oom"}
    with tempfile.TemporaryDirectory(prefix="patchbench-bench-") as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_path.write_text(json.dumps(job))
        proc = subprocess.run([sys.executable, "-m", "patchbench.bench.worker", str(job_path), str(out_path)], check=False)
        if proc.returncode != 0 or not out_path.is_file():
            why = "killed (out of host memory?)" if proc.returncode in (-9, 137) else f"exit status {proc.returncode}"
            return {"error": f"worker process failed ({why}); see the messages above", "error_kind": "crash"}
        return json.loads(out_path.read_text())


def run(args) -> int:
    from patchbench import registry
    from patchbench.bench.harness import bench_precision
    from patchbench.bench.subject import BenchSpec
    from patchbench.bench.sweep import default_budget_bytes, parse_sweep, plot_sweep
    from patchbench.engine.measure import resolve_device

    for name in args.models:
        registry.get_model(name)  # unknown name -> ConfigError with the valid choices
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size}: must be at least 1")
    overrides = model_overrides(args.set, args.models)
    device = resolve_device(args.device)
    bench_precision(args.dtype, device)
    sweep_field, values = parse_sweep(*args.sweep) if args.sweep else (None, [None])
    if args.max_batch and sweep_field == "batch_size":
        raise ConfigError("--max-batch with --sweep batch-size: choose one; --max-batch finds the batch itself")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {args.out!r}: not writable ({e.strerror})") from None

    peak = None
    if device.type == "cpu" and not args.peak_tflops:  # probe once, here, for every worker
        import torch

        from patchbench.bench.peaks import cpu_peak

        if args.threads:
            torch.set_num_threads(args.threads)
        peak = list(cpu_peak(args.dtype))
        print(f"CPU peak for MFU: {peak[1]}", flush=True)
    budget = 0
    if args.max_batch and device.type != "cuda":
        budget = int(args.mem_budget * 2**30) if args.mem_budget > 0 else default_budget_bytes()
        print(f"CPU memory budget for --max-batch: {budget / 2**30:.1f} GiB of peak RSS", flush=True)

    if args.profile:
        return run_profile(args, overrides, peak, out)

    rows = []
    for value in values:
        for name in args.models:
            spec = BenchSpec(
                model=name, overrides=overrides[name], batch_size=args.batch_size, seq_len=args.seq_len,
                image_size=args.image_size, dtype=args.dtype, compile=args.compile, channels_last=args.channels_last,
                warmup=args.warmup, steps=args.steps, windows=args.windows, inference=not args.no_inference,
                device=args.device, vocab_size=args.vocab_size, num_classes=args.num_classes, peak=peak,
                peak_tflops=args.peak_tflops, threads=args.threads, objective=args.objective,
            )
            if sweep_field:
                spec = dataclasses.replace(spec, **{sweep_field: value})
            row = measure_point(spec, args, budget, sweep_field)
            if sweep_field:
                row.setdefault(sweep_field, value)
            rows.append(row)

    meta = {"args": vars(args), "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "host": platform.node(), "python": platform.python_version(), "sweep": sweep_field,
            "cpu_memory_budget_bytes": budget or None}
    (out / "bench.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str))
    text = tables(rows, sweep_field)
    if sweep_field and any("error" not in r for r in rows):
        png = plot_sweep(rows, sweep_field, out / "sweep.png")
        text += f"\n![sweep]({png.name})\n"
    (out / "bench.md").write_text(text)
    print("\n" + text)
    print(f"saved {out / 'bench.json'} and {out / 'bench.md'}")
    return 0


def run_profile(args, overrides: dict[str, dict[str, Any]], peak: list | None, out: Path) -> int:
    """--profile: one fresh process per model; OUT/profile.md and OUT/profile.json."""
    from patchbench.bench.subject import BenchSpec, configure

    if args.sweep or args.max_batch or args.reference:
        raise ConfigError("--profile: a single measurement; drop --sweep, --max-batch and --reference")
    results, text = [], ""
    for name in args.models:
        spec = BenchSpec(model=name, overrides=overrides[name], batch_size=args.batch_size, seq_len=args.seq_len,
                         image_size=args.image_size, dtype=args.dtype, compile=args.compile, channels_last=args.channels_last,
                         steps=args.steps, device=args.device, vocab_size=args.vocab_size, num_classes=args.num_classes,
                         peak=peak, peak_tflops=args.peak_tflops, threads=args.threads, objective=args.objective)
        configure(spec)
        r = run_job_somewhere({"kind": "profile", "spec": dataclasses.asdict(spec)}, args.in_process)
        if "error" in r:
            raise ConfigError(r["error"])
        results.append(r)
        text += f"## {name}\n\n{r['device_name']}; torch {r['torch']}; peak: {r['peak_source']}.\n\n{r['table']}\n"
    (out / "profile.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2, default=str))
    (out / "profile.md").write_text(text)
    print("\n" + text)
    print(f"saved {out / 'profile.md'} and {out / 'profile.json'}")
    return 0


def measure_point(spec, args, budget: int, sweep_field: str | None) -> dict[str, Any]:
    """One model at one setting: (largest batch,) then the measurement, each in its own process.
    Outside a sweep a config error ends the command; inside one it becomes a row that says why."""
    from patchbench.bench.harness import memory_key
    from patchbench.bench.subject import configure

    label = spec.model + (f" {sweep_field}={getattr(spec, sweep_field)}" if sweep_field else "")

    def failed(error: str, kind: str | None) -> dict[str, Any]:
        if kind == "config" and not sweep_field:
            raise ConfigError(error)
        print(f"{label}: {error}", flush=True)
        return {"model": spec.model, "error": error}

    try:
        configure(spec)  # a bad config: one line now, not a traceback in a worker
    except ConfigError as e:
        return failed(str(e), "config")
    found = None
    if args.max_batch:
        found = run_job_somewhere({"kind": "max_batch", "spec": dataclasses.asdict(spec), "limit": args.max_batch_limit,
                                   "budget_bytes": budget}, args.in_process)
        if "error" in found:
            return failed(found["error"], found.get("error_kind"))
        spec = dataclasses.replace(spec, batch_size=found["max_batch"])
        print(f"{label}: largest batch that fits: {found['max_batch']}"
              + (" (limit reached)" if found["limit_reached"] else ""), flush=True)
    job = {"kind": "bench", "spec": dataclasses.asdict(spec), "reference": args.reference, "reference_dtype": args.reference_dtype}
    row = run_job_somewhere(job, args.in_process)
    if "error" in row:
        return failed(row["error"], row.get("error_kind"))
    if found is not None:
        row["max_batch_search"] = {k: found[k] for k in ("max_batch", "limit_reached", "trials", "budget_bytes")}
    key = memory_key(row["device"])
    row["memory_mib"] = row[key] / 2**20
    for ref in row.get("references") or ([row["reference"]] if row.get("reference") else []):
        if ref.get(key):
            ref["memory_mib"] = ref[key] / 2**20
    print(one_line(label, row), flush=True)
    return row


# --------------------------------------------------------------------------------------------------
# printing


def _mib(v: float | None) -> str:
    return "—" if v is None else f"{v / 2**20:,.0f}"


def _rate(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"


def _times(v: float | None) -> str:
    return "—" if not v else f"×{v:.2f}"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def one_line(label: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{label}: {r['error']}"
    s = (f"{label}: train {_rate(r['train_samples_per_s'])} samples/s (±{100 * r['train_spread']:.0f}%), "
         f"{_rate(r['train_items_per_s'])} {r['item']}/s, "
         f"peak {_mib(r.get('train_peak_allocated_bytes', r.get('train_peak_rss_bytes')))} MiB, "
         f"MFU {_pct(r.get('train_mfu'))}")
    for ref in r.get("references") or [r.get("reference") or {}]:
        if ref.get("train_speedup"):
            s += f"; vs {ref['name']}: ×{ref['train_speedup']:.2f} speed, ×{ref['memory_ratio']:.2f} memory"
    return s


def tables(rows: list[dict[str, Any]], sweep_field: str | None) -> str:
    ok = [r for r in rows if "error" not in r]
    cuda = any(r["device"] == "cuda" for r in ok)
    mem_head = "peak alloc / reserved MiB" if cuda else "peak RSS MiB (+ over the process before the model)"
    shape = "/".join(h for h, k in (("seq", "seq_len"), ("image", "image_size")) if any(r.get(k) for r in ok)) or "shape"
    header = (f"| model | params | batch | {shape} | dtype | train samples/s (±) | train items/s | "
              f"infer samples/s | {mem_head} | train GFLOP/sample | train MFU | compile s |")
    lines = [header,
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            at = f" at {sweep_field}={r.get(sweep_field)}" if sweep_field else ""
            lines.append(f"| {r['model']} | | | {r.get('seq_len') or r.get('image_size') or ''} | | {r['error']}{at} | | | | | | |")
            continue
        mem = _mib(r.get("train_peak_allocated_bytes", r.get("train_peak_rss_bytes")))
        if cuda:
            mem += f" / {_mib(r.get('train_peak_reserved_bytes'))}"
        else:
            mem += f" (+{_mib(r['train_peak_rss_bytes'] - r['memory_before_bytes'])})"
        flags = "+compile" if r["compile"] else ""
        flags += "+cl" if r["channels_last"] else ""
        comp = "—" if not r["compile"] else f"{r.get('compile_train_s', 0):.1f} + {r.get('compile_infer_s', 0):.1f}"
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['batch_size']} | {r.get('seq_len') or r.get('image_size')} | {r['dtype']}{flags} | "
            f"{_rate(r['train_samples_per_s'])} (±{100 * r['train_spread']:.0f}%) | {_rate(r['train_items_per_s'])} {r['item']}/s | "
            f"{_rate(r.get('infer_samples_per_s'))} | {mem} | {r['flops_train_per_sample'] / 1e9:.3f} | "
            f"{_pct(r.get('train_mfu'))} | {comp} |")
    out = "\n".join(lines) + "\n"
    if ok:
        r0 = ok[0]
        out += f"\nDevice: {r0['device_name']}; torch {r0['torch']}; peak for MFU: {r0['peak_source']}; memory: {r0['memory_peak_kind']}"
        out += "." if cuda else f" (the process held {_mib(r0['memory_before_bytes'])} MiB before building the model).\n"
        out += "\n" if cuda else ""
    notes = [(r["model"], n) for r in ok for n in r.get("notes", [])]
    for model, n in dict.fromkeys(notes):
        out += f"- {model}: {n}\n"
    refs = [r for r in ok if r.get("reference")]
    if refs:
        out += ("\n| model | reference | ref params | ref train samples/s | ref infer samples/s | ref peak MiB | "
                "train speed × | infer speed × | memory × | max |Δ| of outputs |\n"
                "|---|---|---|---|---|---|---|---|---|---|\n")
        for r, f in [(row, f) for row in refs for f in row.get("references") or [row["reference"]]]:
            if not f.get("name"):
                out += f"| {r['model']} | {f.get('why')} | | | | | | | | |\n"
                continue
            ref_mem = _mib(f.get("train_peak_allocated_bytes", f.get("train_peak_rss_bytes")))
            diff = f.get("max_abs_diff")
            out += (f"| {r['model']}{' ' + str(r.get(sweep_field)) if sweep_field else ''} | {f['name']} | {f['params']:,} | "
                    f"{_rate(f['train_samples_per_s'])} | {_rate(f.get('infer_samples_per_s'))} | {ref_mem} | "
                    f"×{f['train_speedup']:.2f} | {_times(f.get('infer_speedup'))} | ×{f['memory_ratio']:.2f} | "
                    f"{'n/a' if diff is None else f'{diff:.1e}'} |\n")
        out += ("\nSpeed × = patchbench ÷ reference samples/s (above 1: patchbench is faster); memory × = patchbench ÷ "
                "reference peak (below 1: patchbench uses less). References run fp32, eager, default AdamW, in the same "
                "process after patchbench's model" + ("." if cuda else "; on CPU both peaks are the process's RSS, which "
                "includes the interpreter and libraries and what the allocator kept, so memory × there is indicative only.") + "\n")
    return out
