"""A study's report: the seed-style table, curves (PNG + CSV), samples; report.md and a self-contained report.html.

Runs repeated over seeds (`<name>-s<seed>`) are grouped and shown as mean ± std.
Relative figures follow the PACING seed: each model's value against the baseline's, (a - b) / b.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

from patchbench.errors import ConfigError
from patchbench.rundir import StudyDir, write_json

SEED_SUFFIX = re.compile(r"-s\d+$")


def _load_runs(study_dir: Path) -> list[dict[str, Any]]:
    runs = []
    for run in StudyDir(study_dir).runs():
        s = run.read_summary()
        if s is None:
            continue
        s["_dir"] = run.path
        s["_config"] = run.read_config()
        rows = run.read_metrics()
        s["_train"] = [(r["step"], r["train_loss"]) for r in rows if "train_loss" in r]
        s["_val"] = [(r["step"], r) for r in rows if "val_loss" in r]
        runs.append(s)
    return runs


def _config_value(cfg: dict, dotted: str) -> Any:
    cur: Any = cfg
    for part in dotted.split("."):
        if isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        elif isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return "-"
    return cur


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _mib(b: float | None) -> str:
    return "-" if b is None else f"{b / 2**20:,.0f} MiB"


def _rel(value: float, base: float) -> str:
    if base in (0, None) or value is None or math.isnan(value) or math.isnan(base):
        return ""
    return f" ({100 * (value - base) / base:+.1f}%)"


def _group(runs: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(SEED_SUFFIX.sub("", r["name"]), []).append(r)
    return groups


def _plots(study_dir: Path, runs: list[dict]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    metrics = ["val_loss"] + sorted({k for r in runs for _, row in r["_val"] for k in row if k.startswith("val_") and k != "val_loss"})
    for key, title, fname in [("_val", "validation loss", "curves_val.png"), ("_train", "training loss", "curves_train.png")]:
        fig, ax = plt.subplots(figsize=(7, 4))
        for r in runs:
            pts = r[key]
            if not pts:
                continue
            xs = [p[0] for p in pts]
            ys = [p[1]["val_loss"] if key == "_val" else p[1] for p in pts]
            ax.plot(xs, ys, label=r["name"], linewidth=1.2)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(title)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(study_dir / fname, dpi=110)
        plt.close(fig)
        made.append(fname)
    for m in metrics[1:]:
        fig, ax = plt.subplots(figsize=(7, 4))
        for r in runs:
            pts = [(s, row[m]) for s, row in r["_val"] if m in row]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=r["name"], linewidth=1.2)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(m)
        ax.set_title(m.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fname = f"curves_{m}.png"
        fig.savefig(study_dir / fname, dpi=110)
        plt.close(fig)
        made.append(fname)
    with open(study_dir / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "step", "metric", "value"])
        for r in runs:
            for s, v in r["_train"]:
                w.writerow([r["name"], s, "train_loss", v])
            for s, row in r["_val"]:
                for k, v in row.items():
                    if k != "step":
                        w.writerow([r["name"], s, k, v])
    return made


def _pivot(rows: list[dict]) -> list[str]:
    """Runs named COLUMN-ROW (e.g. fpt-bit_xor) as a ROW × COLUMN table of the final metric."""
    cols: list[str] = []
    table: dict[str, dict[str, str]] = {}
    for r in rows:
        if "-" not in r["name"]:
            continue
        col, row = r["name"].split("-", 1)
        cols += [col] if col not in cols else []
        cell = f"{r['metric']:.4f}" + (f" ± {r['metric_std']:.4f}" if r["runs"] > 1 else "")
        table.setdefault(f"{row} ({r['metric_key']}{' ↑' if r['higher_is_better'] else ' ↓'})", {})[col] = cell
    if not table:
        return []
    out = ["## Summary across variants", "", "| task | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for row, cells in table.items():
        out.append(f"| {row} | " + " | ".join(cells.get(c, "-") for c in cols) + " |")
    return out + [""]


def write_report(study_dir: Path) -> Path:
    study_dir = Path(study_dir)
    spec = StudyDir(study_dir).read_spec()
    runs = _load_runs(study_dir)
    order = [r.get("name") for r in spec.get("runs") or []]  # recipe order, seeds after their run
    runs.sort(key=lambda r: (order.index(SEED_SUFFIX.sub("", r["name"])) if SEED_SUFFIX.sub("", r["name"]) in order else len(order), r["name"]))
    if not runs:
        raise ConfigError(f"study directory {str(study_dir)!r}: no finished runs to report")
    study = spec.get("study") or {}
    columns: list[str] = study.get("columns") or []
    groups = _group(runs)
    names = list(groups)
    baseline = study.get("baseline") or ""
    if baseline and baseline not in groups:
        raise ConfigError(f"study.baseline: {baseline!r} is not a run; valid: {', '.join(names)}")

    rows = []
    for name, members in groups.items():
        first = members[0]
        fm, fs = _mean_std([m["final_metric"] for m in members])
        mem_key = "peak_allocated_bytes" if "peak_allocated_bytes" in first else "peak_rss_bytes"
        rows.append({
            "name": name, "runs": len(members), "model": first["model"],
            "metric": fm, "metric_std": fs, "metric_name": first["final_metric_name"],
            "higher_is_better": first.get("higher_is_better", False),
            "samples_per_s": _mean_std([m["train_examples_per_s"] for m in members])[0],
            "items_per_s": _mean_std([m["train_items_per_s"] for m in members])[0],
            "time_per_epoch_s": _mean_std([m["time_per_epoch_s"] for m in members])[0],
            "model_bytes": first["model_bytes"], "peak_bytes": max(m.get(mem_key) or 0 for m in members),
            "peak_kind": "GPU max allocated" if mem_key == "peak_allocated_bytes" else "peak RSS (process)",
            "params": first["params_total"], "trainable": first["params_trainable"], "steps": first["steps"],
            "device": first["device"], "precision": first["precision"],
            "extra": [_config_value(first["_config"], c) for c in columns],
            "samples": [(m["name"], m.get("sample")) for m in members if m.get("sample")],
        })

    for r, members in zip(rows, groups.values()):
        data = members[0]["_config"].get("data") or {}
        dataset = data.get("dataset") if isinstance(data, dict) else None
        r["task"] = members[0]["task"] + (f" ({dataset})" if dataset else "")
        r["metric_key"] = members[0]["final_metric_name"].rsplit(" ", 1)[-1]  # e.g. val_accuracy
        r["_same"] = (members[0]["task"], json.dumps(data, sort_keys=True, default=str), r["metric_key"])
    multi_task = len({r["_same"] for r in rows}) > 1

    def base_for(row):
        """Relative figures only between runs of the same task, data and metric."""
        same = [r for r in rows if r["_same"] == row["_same"]]
        if baseline:
            b = next(r for r in rows if r["name"] == baseline)
            return b if b in same else row
        if len(same) == 2:
            return same[1] if row is same[0] else same[0]
        return same[0]

    title = study.get("title") or spec.get("name", "study")
    lines = [f"# {title}", ""]
    if spec.get("description"):
        lines += [spec["description"].strip(), ""]
    against = ("`" + baseline + "`") if baseline else ("the other model" if len(rows) == 2 else "the first run of the same task")
    lines += [f"Preset `{spec.get('preset', 'default')}`; device {rows[0]['device']}, precision {rows[0]['precision']}. "
              f"Relative figures: each row against {against}, (a - b) / b" + (", only between runs of the same task, data and metric." if multi_task else "."), ""]
    head = ["run"] + (["task", "metric"] if multi_task else []) + ["final metric", "train samples/s", "train items/s", "time / epoch",
                                                                  "model memory", "peak memory", "parameters", "trainable", "steps"] + columns
    seeds = any(r["runs"] > 1 for r in rows)
    if seeds:
        head.insert(1, "seeds")
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in rows:
        b = base_for(r)

        def rel(key, r=r, b=b):
            return _rel(r[key], b[key]) if b is not r else ""

        metric = f"{r['metric']:.4f}" + (f" ± {r['metric_std']:.4f}" if r["runs"] > 1 else "")
        cells = [r["name"]] + ([r["task"], r["metric_key"] + (" ↑" if r["higher_is_better"] else " ↓")] if multi_task else []) + [
            metric + rel("metric"),
            f"{r['samples_per_s']:.2f}" + rel("samples_per_s"),
            f"{r['items_per_s']:,.0f}",
            f"{r['time_per_epoch_s']:.1f} s",
            _mib(r["model_bytes"]) + rel("model_bytes"),
            _mib(r["peak_bytes"]) + rel("peak_bytes"),
            f"{r['params']:,}" + rel("params"),
            f"{r['trainable']:,}", str(r["steps"])] + [str(v) for v in r["extra"]]
        if seeds:
            cells.insert(1, str(r["runs"]))
        lines.append("| " + " | ".join(cells) + " |")
    if multi_task:
        what = "Final metric: the mean of the last validations of each run's metric (↑ higher is better, ↓ lower is better)."
    else:
        better = "higher" if rows[0]["higher_is_better"] else "lower"
        what = f"Final metric: {rows[0]['metric_name']} ({better} is better)."
    lines += ["", what + " Samples/s count training only "
              f"(validation excluded). Peak memory: {rows[0]['peak_kind']}. Model memory: parameters + buffers. "
              "Parameters: every distinct tensor once (tied embeddings counted once). Time / epoch: training time for one "
              "epoch of the run's examples (extrapolated from the steps run when a run stops short of an epoch)." + (" ± is the standard deviation over seeds." if seeds else ""), ""]
    if study.get("pivot"):
        lines += _pivot(rows)

    plots = _plots(study_dir, runs)
    lines += ["## Curves", ""] + [f"![{p}]({p})" for p in plots] + ["", "Data: `curves.csv`.", ""]
    samples = [s for r in rows for s in r["samples"]]
    if samples:
        lines += ["## Samples (top-k 50, seed 43)", ""]
        for name, text in samples:
            lines += [f"### {name}", "", "```", text.strip(), "```", ""]
    md = "\n".join(lines)

    write_json([{k: v for k, v in r.items() if k != "samples" and not k.startswith("_")} for r in rows], study_dir / "results.json")
    _write_html(study_dir, title, md, plots)
    tmp = study_dir / "report.md.tmp"
    tmp.write_text(md)
    tmp.replace(study_dir / "report.md")
    return study_dir / "report.md"


def _write_html(study_dir: Path, title: str, md: str, plots: list[str]) -> None:
    """A self-contained page: the markdown rendered simply, images inlined as base64."""
    body, in_code, table = [], False, []

    def flush_table():
        if table:
            cells = [[c.strip() for c in line.strip("|").split("|")] for line in table if not set(line) <= set("|-")]
            out = ["<table>"] + [
                "<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{html.escape(c)}</{'th' if i == 0 else 'td'}>" for c in row) + "</tr>"
                for i, row in enumerate(cells)
            ] + ["</table>"]
            body.extend(out)
            table.clear()

    for line in md.splitlines():
        if line.startswith("```"):
            body.append("</pre>" if in_code else "<pre>")
            in_code = not in_code
            continue
        if in_code:
            body.append(html.escape(line))
            continue
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        m = re.match(r"!\[(.*?)\]\((.*?)\)", line)
        if m and (study_dir / m.group(2)).is_file():
            data = base64.b64encode((study_dir / m.group(2)).read_bytes()).decode()
            body.append(f'<img alt="{html.escape(m.group(1))}" src="data:image/png;base64,{data}">')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush_table()
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}img{max-width:100%}pre{background:#f5f5f5;padding:8px;white-space:pre-wrap}</style>"
            f"</head><body>{''.join(body)}</body></html>")
    tmp = study_dir / "report.html.tmp"
    tmp.write_text(page)
    tmp.replace(study_dir / "report.html")
