"""A study's report: verdicts over seeds, the seed-style table, compute-matched views, fairness, the seed's
claims, curves (PNG + CSV) and samples; report.md and a self-contained report.html.

Runs are grouped by their axis values (a grid's model / task / variant, or the run's name) over seeds, shown
as mean ± std; each compared pair gets a Welch verdict (stats.py). Relative figures follow the PACING seed:
each model's value against the baseline's, (a - b) / b.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from patchbench.errors import ConfigError
from patchbench.rundir import StudyDir, write_json
from patchbench.studies.claims import check_claims, evaluate_claims
from patchbench.studies.stats import sentence, welch

SEED_SUFFIX = re.compile(r"-s\d+$")
BAND_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]


def _load_runs(study_dir: Path, axes: dict[str, dict]) -> list[dict[str, Any]]:
    """Finished runs with their config, curves, axis values and FLOPs (counted here if the worker did not)."""
    from patchbench.studies.flops import run_flops

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
        name = s["name"]
        if name in axes:
            s["_axes"] = dict(axes[name])
        else:  # a study written before axes were recorded: the name is all there is
            m = SEED_SUFFIX.search(name)
            s["_axes"] = {"run": SEED_SUFFIX.sub("", name), **({"seed": int(m.group()[2:])} if m else {})}
        try:
            s["_flops"] = run_flops(run.path)
        except Exception as e:  # noqa: BLE001 - the FLOPs axis is optional; say why it is missing
            print(f"report: no FLOPs for {name} ({type(e).__name__}: {e})", flush=True)
            s["_flops"] = None
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


# --------------------------------------------------------------------------------------------------
# groups: the runs of one configuration over seeds


@dataclass
class Group:
    label: str
    axes: dict[str, Any]  # without the seed
    runs: list[dict]

    @property
    def metric_key(self) -> str:
        return self.runs[0]["final_metric_name"].rsplit(" ", 1)[-1]  # e.g. val_accuracy

    @property
    def higher_is_better(self) -> bool:
        return bool(self.runs[0].get("higher_is_better", False))

    @property
    def same(self) -> tuple:
        """Runs are compared only within the same task, data and metric."""
        data = self.runs[0]["_config"].get("data") or {}
        return self.runs[0]["task"], json.dumps(data, sort_keys=True, default=str), self.metric_key

    def values(self, quantity: str) -> list[float]:
        key = {"final_metric": "final_metric", "samples_per_s": "train_examples_per_s", "time_per_epoch_s": "time_per_epoch_s"}.get(quantity)
        if quantity == "peak_bytes":
            return [float(r.get("peak_allocated_bytes") or r.get("peak_rss_bytes") or 0) for r in self.runs]
        return [float(r[key]) for r in self.runs if r.get(key) is not None]


def _last_quarter(r: dict, metric: str) -> float:
    """The change of `metric` over the last quarter of the run's steps (last validation minus the one at 3/4)."""
    pts = [(s, row[metric]) for s, row in r["_val"] if metric in row]
    if len(pts) < 4:
        return math.nan
    at = 0.75 * pts[-1][0]
    ref = min(pts, key=lambda p: abs(p[0] - at))
    return pts[-1][1] - ref[1]


def _groups(runs: list[dict]) -> list[Group]:
    out: dict[str, Group] = {}
    for r in runs:
        axes = {k: v for k, v in r["_axes"].items() if k != "seed"}
        label = "-".join(str(v) for v in axes.values())
        out.setdefault(label, Group(label, axes, [])).runs.append(r)
    return list(out.values())


def _find(groups: list[Group], spec: Any) -> Group | None:
    """A group by its label, or by axis values ({variant: fpt, task: bit_xor})."""
    if isinstance(spec, dict):
        hits = [g for g in groups if all(str(g.axes.get(k)) == str(v) for k, v in spec.items())]
        return hits[0] if len(hits) == 1 else None
    return next((g for g in groups if g.label == str(spec)), None)


def _pairs(groups: list[Group], compare: list[list[str]], baseline: str) -> list[tuple[Group, Group]]:
    """The pairs the verdicts compare: `study.compare` (labels, or axis values differing in one axis), else every
    pair of a small comparable set, else each run against the baseline or the best of its set."""
    sets: dict[tuple, list[Group]] = {}
    for g in groups:
        sets.setdefault(g.same, []).append(g)
    pairs: list[tuple[Group, Group]] = []
    if compare:
        for a, b in compare:
            ga, gb = _find(groups, a), _find(groups, b)
            if ga is not None and gb is not None and ga.same == gb.same:
                pairs.append((ga, gb))
                continue
            for members in sets.values():
                for g1 in members:
                    for g2 in members:
                        diff = [k for k in g1.axes if g1.axes.get(k) != g2.axes.get(k)]
                        if len(diff) == 1 and str(g1.axes[diff[0]]) == str(a) and str(g2.axes[diff[0]]) == str(b):
                            pairs.append((g1, g2))
        return pairs
    for members in sets.values():
        base = next((g for g in members if g.label == baseline), None)
        if base is not None:
            pairs += [(g, base) for g in members if g is not base]
        elif len(members) <= 4:
            pairs += [(members[i], members[j]) for i in range(len(members)) for j in range(i + 1, len(members))]
        else:
            best = (max if members[0].higher_is_better else min)(members, key=lambda g: statistics.fmean(g.values("final_metric")))
            pairs += [(best, g) for g in members if g is not best]
    return pairs


def _verdicts(pairs: list[tuple[Group, Group]]) -> list[str]:
    out = []
    for ga, gb in pairs:
        cmp = welch(ga.values("final_metric"), gb.values("final_metric"), ga.label, gb.label)
        out.append(sentence(cmp, "final " + ga.metric_key.replace("_", " "), ga.higher_is_better))
    return out


# --------------------------------------------------------------------------------------------------
# compute axes: cumulative training time and FLOPs at every step


def _time_at(run: dict, steps: np.ndarray) -> np.ndarray:
    """Cumulative training time (s) at `steps`: linear between validations (each records train_time_s), 0 at step 0."""
    pts = [(0, 0.0)] + [(s, row["train_time_s"]) for s, row in run["_val"] if "train_time_s" in row]
    xs, ts = np.array([p[0] for p in pts], float), np.maximum.accumulate(np.array([p[1] for p in pts], float))
    if len(xs) > 1 and steps.size and steps.max() > xs[-1]:  # after the last validation: at the last segment's rate
        rate = (ts[-1] - ts[-2]) / max(xs[-1] - xs[-2], 1)
        extra = np.maximum(steps - xs[-1], 0) * rate
        return np.where(steps > xs[-1], ts[-1] + extra, np.interp(steps, xs, ts))
    return np.interp(steps, xs, ts)


def _flops_at(run: dict, steps: np.ndarray) -> np.ndarray | None:
    f = run.get("_flops")
    if not f:
        return None
    return steps.astype(float) * f["examples_per_step"] * f["train_flops_per_example"]


def _curves_csv(study_dir: Path, runs: list[dict]) -> None:
    """One row per (run, step, metric): cumulative training time and FLOPs beside the value."""
    with open(study_dir / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "group", "seed", "step", "train_time_s", "train_flops", "metric", "value"])
        for r in runs:
            group = "-".join(str(v) for k, v in r["_axes"].items() if k != "seed")
            seed = r["_axes"].get("seed", r["_config"].get("train", {}).get("seed", ""))
            series = [(s, "train_loss", v) for s, v in r["_train"]]
            series += [(s, k, v) for s, row in r["_val"] for k, v in row.items() if k.startswith("val_")]
            series.sort(key=lambda t: t[0])
            steps = np.array([t[0] for t in series], float)
            times = _time_at(r, steps) if len(steps) else steps
            flops = _flops_at(r, steps)
            for i, (s, k, v) in enumerate(series):
                w.writerow([r["name"], group, seed, s, f"{times[i]:.4f}", "" if flops is None else f"{flops[i]:.6g}", k, v])


def _ema(ys: np.ndarray, weight: float) -> np.ndarray:
    out = np.empty_like(ys)
    acc = ys[0]
    for i, y in enumerate(ys):
        acc = weight * acc + (1 - weight) * y
        out[i] = acc
    return out


def _group_series(g: Group, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None] | None:
    """(steps, mean, std, mean time, flops) over the group's seeds at the steps every seed has."""
    per_run = []
    for r in g.runs:
        pts = r["_train"] if metric == "train_loss" else [(s, row[metric]) for s, row in r["_val"] if metric in row]
        if pts:
            per_run.append(dict(pts))
    if not per_run:
        return None
    steps = np.array(sorted(set.intersection(*[set(p) for p in per_run])), float)
    if not steps.size:
        return None
    ys = np.array([[p[int(s)] for s in steps] for p in per_run])  # (seeds, steps)
    times = np.mean([_time_at(r, steps) for r in g.runs], axis=0)
    flops = _flops_at(g.runs[0], steps)
    return steps, ys.mean(0), ys.std(0, ddof=1) if len(ys) > 1 else np.zeros(len(steps)), times, flops


def _plot_metric(study_dir: Path, groups: list[Group], metric: str) -> str | None:
    """One figure per metric: against optimizer step, training time and training FLOPs; EMA line over the raw
    mean (faint), mean ± std over seeds shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    series = [(g, _group_series(g, metric)) for g in groups]
    series = [(g, s) for g, s in series if s is not None]
    if not series:
        return None
    has_flops = all(s[4] is not None for _, s in series)
    panels = [("optimizer step", 0), ("training time (s)", 3)] + ([("training FLOPs", 4)] if has_flops else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.9), squeeze=False)
    for i, (g, (steps, mean, std, times, flops)) in enumerate(series):
        colour = BAND_COLOURS[i % len(BAND_COLOURS)]
        xs_by = {0: steps, 3: times, 4: flops}
        # training curves (a point per step): EMA over the raw mean; validation curves (few points): the mean itself
        weight = min(0.98, max(0.0, 1 - 20 / len(steps))) if metric == "train_loss" else 0.0
        smooth = _ema(mean, weight) if weight > 0 else mean
        for ax, (_, key) in zip(axes[0], panels):
            xs = xs_by[key]
            if weight > 0:
                ax.plot(xs, mean, color=colour, alpha=0.25, linewidth=0.8)
            ax.plot(xs, smooth, color=colour, linewidth=1.6, label=f"{g.label} (n={len(g.runs)})")
            if len(g.runs) > 1:
                ax.fill_between(xs, mean - std, mean + std, color=colour, alpha=0.18, linewidth=0)
    for ax, (xlabel, key) in zip(axes[0], panels):
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if key == 4:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # decades only: minor labels overlap
    axes[0][0].set_ylabel(metric.replace("_", " "))
    axes[0][0].legend(fontsize=7)
    title = metric.replace("_", " ") + (" (EMA, raw faint" if "train" in metric else " (mean") + ", band = ± std over seeds)"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fname = f"curves_{metric}.png" if metric != "val_loss" else "curves_val.png"
    if metric == "train_loss":
        fname = "curves_train.png"
    fig.savefig(study_dir / fname, dpi=100)
    plt.close(fig)
    return fname


def _plots(study_dir: Path, runs: list[dict], groups: list[Group]) -> list[str]:
    metrics = ["val_loss"] + sorted({k for r in runs for _, row in r["_val"] for k in row if k.startswith("val_") and k != "val_loss"})
    made = [_plot_metric(study_dir, groups, m) for m in metrics + ["train_loss"]]
    _curves_csv(study_dir, runs)
    return [m for m in made if m]


def _at_budget(r: dict, metric: str, axis: str, budget: float) -> float:
    """The run's validation metric at a training-time or FLOPs budget, interpolated between validations."""
    pts = [(s, row[metric]) for s, row in r["_val"] if metric in row]
    if not pts:
        return math.nan
    steps = np.array([p[0] for p in pts], float)
    xs = _time_at(r, steps) if axis == "time" else _flops_at(r, steps)
    if xs is None or budget < xs[0] or budget > xs[-1] * (1 + 1e-9):
        return math.nan
    return float(np.interp(budget, xs, [p[1] for p in pts]))


def _matched(groups: list[Group]) -> list[str]:
    """Per comparable set: each group's metric at the smaller training time and the smaller FLOPs total."""
    sets: dict[tuple, list[Group]] = {}
    for g in groups:
        sets.setdefault(g.same, []).append(g)
    lines = []
    for members in sets.values():
        if len(members) < 2:
            continue
        metric = members[0].metric_key
        every = [r for g in members for r in g.runs]  # budgets every run reached
        t_budget = min(r["train_time_s"] for r in every)
        f_budget = None
        if all(r["_flops"] for r in every):
            f_budget = min(r["steps"] * r["_flops"]["examples_per_step"] * r["_flops"]["train_flops_per_example"] for r in every)
        if not lines:
            lines += ["## Compute-matched", "",
                      ("Each run's validation metric at the same training-time budget and at the same training-FLOPs budget: the "
                       "smallest total of any run, interpolated between validations (mean ± std over seeds; - : no validation "
                       "that early). Time is measured training time (validation excluded) on this machine; FLOPs are counted "
                       "as `patchbench bench` counts them (forward + backward per example × examples seen)."), ""]
        head = ["run", f"{metric} at {t_budget:.0f} s", "training time", "FLOPs / example"]
        if f_budget is not None:
            head.insert(2, f"{metric} at {f_budget:.3g} FLOPs")
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for g in members:
            at_t = [_at_budget(r, metric, "time", t_budget) for r in g.runs]
            cells = [g.label, _ms(at_t), f"{statistics.fmean([r['train_time_s'] for r in g.runs]):.0f} s",
                     f"{g.runs[0]['_flops']['train_flops_per_example']:.3g}" if g.runs[0]["_flops"] else "-"]
            if f_budget is not None:
                cells.insert(2, _ms([_at_budget(r, metric, "flops", f_budget) for r in g.runs]))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _ms(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "-"
    m, s = _mean_std(values)
    return f"{m:.4f}" + (f" ± {s:.4f}" if len(values) > 1 else "")


# --------------------------------------------------------------------------------------------------
# fairness: what differs between the compared runs besides the architecture


def _regularisation(cfg: dict) -> str:
    """The model's non-zero dropout / drop-path rates and the weight decay; "none" when nothing regularises."""
    model = cfg.get("model") or {}
    parts = [f"{k} {v}" for k, v in model.items() if "drop" in k and isinstance(v, (int, float)) and v]
    wd = (cfg.get("optim") or {}).get("weight_decay", 0)
    parts += [f"weight decay {wd}"] if wd else []
    return ", ".join(parts) or "none"


def _fairness(groups: list[Group]) -> list[str]:
    head = ["run", "regularisation", "optimizer, lr (schedule)", "precision", "batch × accum", "steps", "examples seen", "items seen"]
    lines = ["## Fairness", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    cells_by: dict[tuple, list[list[str]]] = {}
    for g in groups:
        r = g.runs[0]
        cfg, optim, train = r["_config"], r["_config"].get("optim") or {}, r["_config"].get("train") or {}
        per_step = train.get("batch_size", 0) * train.get("accum_steps", 1) * (r.get("world_size") or 1)
        items_per = (r["train_items_per_s"] / r["train_examples_per_s"]) if r.get("train_examples_per_s") else 1
        cells = [_regularisation(cfg), f"{optim.get('name')}, {optim.get('lr')} ({optim.get('schedule', 'constant')})", str(r["precision"]),
                 f"{train.get('batch_size')} × {train.get('accum_steps')}", str(r["steps"]), f"{r['steps'] * per_step:,}",
                 f"{r['steps'] * per_step * items_per:,.0f}"]
        cells_by.setdefault(g.same, []).append(cells)
        lines.append("| " + " | ".join([g.label] + cells) + " |")
    differ = sorted({head[i + 1] for members in cells_by.values() for i in range(len(head) - 1)
                     if len({c[i] for c in members}) > 1})
    lines += ["", ("Between runs of the same task these differ: " + ", ".join(differ) + "." if differ else
                   "Runs of the same task share all of these settings.") + " Items: tokens (text) or patches/positions per example "
                   "as the task counts them.", ""]
    return lines


# --------------------------------------------------------------------------------------------------
# the report


def _pivot(groups: list[Group]) -> list[str]:
    """A task × variant (or model) table of the final metric, from the axes (or VARIANT-TASK run names)."""
    table: dict[str, dict[str, str]] = {}
    cols: list[str] = []
    for g in groups:
        if "task" in g.axes and len(g.axes) == 2:
            col = next(str(v) for k, v in g.axes.items() if k != "task")
            row = str(g.axes["task"])
        elif "run" in g.axes and "-" in g.label:
            col, row = g.label.split("-", 1)
        else:
            continue
        cols += [col] if col not in cols else []
        m, s = _mean_std(g.values("final_metric"))
        cell = f"{m:.4f}" + (f" ± {s:.4f}" if len(g.runs) > 1 else "")
        table.setdefault(f"{row} ({g.metric_key}{' ↑' if g.higher_is_better else ' ↓'})", {})[col] = cell
    if not table:
        return []
    out = ["## Summary across variants", "", "| task | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for row, cells in table.items():
        out.append(f"| {row} | " + " | ".join(cells.get(c, "-") for c in cols) + " |")
    return out + [""]


def write_report(study_dir: Path) -> Path:
    study_dir = Path(study_dir)
    spec = StudyDir(study_dir).read_spec()
    study = spec.get("study") or {}
    axes = study.get("axes") or {}
    claims = check_claims(spec.get("claims"))
    runs = _load_runs(study_dir, axes)
    if not runs:
        raise ConfigError(f"study directory {str(study_dir)!r}: no finished runs to report")
    order = list(axes) or [r.get("name") for r in spec.get("runs") or []]
    runs.sort(key=lambda r: (order.index(r["name"]) if r["name"] in order else len(order), r["name"]))
    columns: list[str] = study.get("columns") or []
    groups = _groups(runs)
    names = [g.label for g in groups]
    baseline = study.get("baseline") or ""
    if baseline and baseline not in names:
        raise ConfigError(f"study.baseline: {baseline!r} is not a run; valid: {', '.join(names)}")

    rows = []
    for g in groups:
        members, first = g.runs, g.runs[0]
        fm, fs = _mean_std([m["final_metric"] for m in members])
        mem_key = "peak_allocated_bytes" if "peak_allocated_bytes" in first else "peak_rss_bytes"
        data = first["_config"].get("data") or {}
        dataset = data.get("dataset") if isinstance(data, dict) else None
        rows.append({
            "name": g.label, "axes": g.axes, "runs": len(members), "model": first["model"],
            "metric": fm, "metric_std": fs, "metric_name": first["final_metric_name"], "metric_key": g.metric_key,
            "higher_is_better": g.higher_is_better,
            "samples_per_s": _mean_std([m["train_examples_per_s"] for m in members])[0],
            "items_per_s": _mean_std([m["train_items_per_s"] for m in members])[0],
            "time_per_epoch_s": _mean_std([m["time_per_epoch_s"] for m in members])[0],
            "train_time_s": _mean_std([m["train_time_s"] for m in members])[0],
            "last_quarter": _mean_std([_last_quarter(m, g.metric_key) for m in members if not math.isnan(_last_quarter(m, g.metric_key))])[0],
            "train_flops_per_example": first["_flops"]["train_flops_per_example"] if first["_flops"] else None,
            "model_bytes": first["model_bytes"], "peak_bytes": max(m.get(mem_key) or 0 for m in members),
            "peak_kind": "GPU max allocated" if mem_key == "peak_allocated_bytes" else "peak RSS (process)",
            "params": first["params_total"], "trainable": first["params_trainable"], "steps": first["steps"],
            "device": first["device"], "precision": first["precision"], "torch": first.get("torch", "-"),
            "task": first["task"] + (f" ({dataset})" if dataset else ""), "data": first.get("data"),
            "extra": [_config_value(first["_config"], c) for c in columns],
            "samples": [(m["name"], m.get("sample")) for m in members if m.get("sample")],
            "_same": g.same,
        })
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
    lines = [f"# {title}", "", "## Verdicts", ""]
    lines += [f"- {v}" for v in _verdicts(_pairs(groups, study.get("compare") or [], baseline))] or ["- (a single run: nothing to compare)"]
    lines.append("")
    if study.get("note"):
        lines += [" ".join(str(study["note"]).split()), ""]
    if spec.get("description"):
        lines += [" ".join(spec["description"].split()), ""]  # one paragraph, not the YAML's line breaks
    timing_path = StudyDir(study_dir).timing_path
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    wall = timing.get("wall_s")
    side = (f"; {timing['jobs']} runs side by side, {timing['threads_per_run']} thread{'s' if timing.get('threads_per_run') != 1 else ''} each"
            if timing.get("jobs", 1) > 1 and "threads_per_run" in timing else "")
    against = ("`" + baseline + "`") if baseline else ("the other model" if len(rows) == 2 else "the first run of the same task")
    lines += [f"Preset `{spec.get('preset', 'default')}`; device {rows[0]['device']}, precision {rows[0]['precision']}, torch {rows[0]['torch']}"
              + (f"; wall time of the study {wall / 60:.1f} min (all runs, FLOP counts and set-up{side})" if wall else "") + ". "
              f"Relative figures: each row against {against}, (a - b) / b" + (", only between runs of the same task, data and metric." if multi_task else "."),
              "", "## Results", ""]
    head = ["run"] + (["task", "metric"] if multi_task else []) + ["final metric", "last-quarter change", "train samples/s", "train items/s", "time / epoch",
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
            "-" if math.isnan(r["last_quarter"]) else f"{r['last_quarter']:+.4f}",
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
    lines += ["", what + " Last-quarter change: the metric's last validation minus its value at 3/4 of the steps (a "
              "plateau reads near 0; mean over seeds). Samples/s count training only "
              f"(validation excluded). Peak memory: {rows[0]['peak_kind']}. Model memory: parameters + buffers. "
              "Parameters: every distinct tensor once (tied embeddings counted once). Time / epoch: training time for one "
              "epoch of the run's examples (extrapolated from the steps run when a run stops short of an epoch)." + (" ± is the standard deviation over seeds." if seeds else ""), ""]
    if study.get("pivot"):
        lines += _pivot(groups)
    lines += _matched(groups)
    lines += _fairness(groups)
    if claims:
        lines += ["## Claims", "", "| claim | claimed | measured here | verdict | why |", "|---|---|---|---|---|"]
        for c in evaluate_claims(claims, lambda spec: _find(groups, spec), lambda g, q: g.values(q)):
            lines.append("| " + " | ".join(x.replace("|", "/") for x in (c.claim, c.claimed, c.measured, f"**{c.verdict}**", c.why)) + " |")
        lines.append("")

    plots = _plots(study_dir, runs, groups)
    lines += ["## Curves", ""] + [f"![{p}]({p})" for p in plots] + ["", "Data: `curves.csv` (cumulative training time and FLOPs per row).", ""]
    samples = [s for r in rows for s in r["samples"]]
    if samples:
        lines += ["## Samples (top-k 50, seed 43)", ""]
        for name, text in samples:
            lines += [f"### {name}", "", "```", text.strip("\n"), "```", ""]
    md = "\n".join(lines)

    write_json([{k: v for k, v in r.items() if k != "samples" and not k.startswith("_")} for r in rows], study_dir / "results.json")
    _write_html(study_dir, title, md, plots)
    tmp = study_dir / "report.md.tmp"
    tmp.write_text(md)
    tmp.replace(study_dir / "report.md")
    return study_dir / "report.md"


def _inline(text: str) -> str:
    """Escape, then the little inline markdown the report uses: **bold** and `code`."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _write_html(study_dir: Path, title: str, md: str, plots: list[str]) -> None:
    """A self-contained page: the markdown rendered simply, images inlined as base64, samples with their line breaks."""
    body: list[str] = []
    code: list[str] | None = None  # lines of an open ``` block
    table: list[str] = []
    items: list[str] = []

    def flush():
        if table:
            cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table if not set(line.strip()) <= set("|-")]
            body.append("<table>" + "".join(
                "<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{_inline(c)}</{'th' if i == 0 else 'td'}>" for c in row) + "</tr>"
                for i, row in enumerate(cells)) + "</table>")
            table.clear()
        if items:
            body.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in items) + "</ul>")
            items.clear()

    for line in md.splitlines():
        if line.startswith("```"):
            if code is None:
                flush()
                code = []
            else:
                body.append("<pre>" + html.escape("\n".join(code)) + "</pre>")
                code = None
            continue
        if code is not None:
            code.append(line)
            continue
        if line.startswith("|"):
            table.append(line)
            continue
        if line.startswith("- "):
            items.append(line[2:])
            continue
        flush()
        m = re.match(r"!\[(.*?)\]\((.*?)\)", line)
        if m and (study_dir / m.group(2)).is_file():
            data = base64.b64encode((study_dir / m.group(2)).read_bytes()).decode()
            body.append(f'<img alt="{html.escape(m.group(1))}" src="data:image/png;base64,{data}">')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    flush()
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;line-height:1.4}"
            "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}"
            "th{background:#f0f0f0}img{max-width:100%}ul{background:#f4f8ff;border-left:4px solid #4a78c2;padding:0.6em 2em}"
            "pre{background:#f5f5f5;padding:8px;white-space:pre-wrap;font-size:13px}code{background:#f0f0f0}</style>"
            f"</head><body>{''.join(body)}</body></html>")
    tmp = study_dir / "report.html.tmp"
    tmp.write_text(page)
    tmp.replace(study_dir / "report.html")
