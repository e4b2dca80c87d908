"""A study: a recipe's runs (a grid's, or its `runs:` × seeds), each trained in a fresh process (`--jobs N` side by side), then one report.

    STUDY/study.yaml            the merged recipe (preset + overrides applied; study.axes: each run's axis values)
    STUDY/runs/<run>/...        one run directory per run (see rundir.py)
    STUDY/timing.json           wall time of the last `patchbench study` invocation
    STUDY/report.md, report.html, curves_*.png, curves.csv, results.json

Each run is trained in its own Python process so peak memory and allocator state of one model
never leak into another's measurements. `--resume` skips finished runs and resumes killed ones.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from patchbench.config import RunConfig, build_dataclass
from patchbench.engine.recovery import config_changes, describe_changes
from patchbench.errors import ConfigError
from patchbench.recipe import expand_runs, load_recipe, resolve_recipe
from patchbench.rundir import RunDir, StudyDir, write_json
from patchbench.studies.report import write_report


@dataclasses.dataclass
class StudyConfig:
    seeds: list[int] = dataclasses.field(default_factory=list)  # repeat every run per seed (a grid's `seeds:` does the same)
    columns: list[str] = dataclasses.field(default_factory=list)  # extra config keys in the table
    baseline: str = ""  # run the relative % compare against ("" = the other run, or the first)
    title: str = ""
    pivot: bool = False  # a task × variant table of the final metric (grid axes, or runs named VARIANT-TASK)
    compare: list[list[str]] = dataclasses.field(default_factory=list)  # verdict pairs [A, B]: group names or axis values
    note: str = ""  # what this preset covers and what it leaves out, printed under the verdicts
    axes: dict[str, dict] = dataclasses.field(default_factory=dict)  # written by the study: run name -> its axis values


def study_config(merged: dict) -> StudyConfig:
    return build_dataclass(StudyConfig, merged.get("study"), "study")


def expand_study(merged: dict) -> list[RunConfig]:
    """The study's runs, seeds included."""
    return study_runs(merged)[0]


def study_runs(merged: dict) -> tuple[list[RunConfig], dict[str, dict]]:
    """The study's runs and each run's axis values (grid axes; else `run: NAME`, plus `seed` when repeated)."""
    sc = study_config(merged)
    runs = expand_runs(merged)
    given = {e.get("name"): dict(e.get("axes") or {}) for e in merged.get("runs") or [] if isinstance(e, dict)}
    axes = {r.name: given.get(r.name) or {"run": r.name} for r in runs}
    if not sc.seeds:
        return runs, axes
    if any("seed" in a for a in axes.values()):
        raise ConfigError("study.seeds: the grid already has a seeds axis; give seeds in one place (grid.seeds, or study.seeds: [])")
    out, out_axes = [], {}
    for r in runs:
        for s in sc.seeds:
            name = f"{r.name}-s{s}"
            out.append(dataclasses.replace(r, name=name, train=dataclasses.replace(r.train, seed=s)))
            out_axes[name] = {**axes[r.name], "seed": s}
    return out, out_axes


def run_study(recipe: str, preset: str | None, overrides: list[str], out: Path, resume: bool = False, allow_changes: bool = False,
              jobs: int = 1) -> Path:
    """Train every run of the recipe into `out` (one fresh process each, `jobs` of them at a time), then write the
    report. The study folder is locked for as long as this runs: a second `study` on it gets one line, not a
    duplicate run."""
    merged = resolve_recipe(load_recipe(recipe), preset, overrides, recipe)  # a bad recipe fails before any folder is touched
    merged.setdefault("name", Path(recipe).stem)
    merged["preset"] = preset or "default"
    runs, axes = study_runs({k: v for k, v in merged.items() if k != "preset"})
    merged["study"] = {**(merged.get("study") or {}), "axes": axes}  # the report groups runs by these values
    study = StudyDir(out)
    study.claim()
    study.check_writable()
    with study.lock():
        return _run_study(study, merged, runs, resume, allow_changes, jobs)


def worker_threads(jobs: int) -> int:
    """Torch threads per worker when `jobs` run side by side: the cores shared out (at least one each). A user's own
    OMP_NUM_THREADS wins."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    return max(1, (os.cpu_count() or 1) // jobs)


def _run_study(study: StudyDir, merged: dict, runs: list[RunConfig], resume: bool, allow_changes: bool, jobs: int) -> Path:
    out = study.path
    if study.has_spec() and not resume:
        raise ConfigError(f"study directory {str(out)!r} already holds a study; pass --resume to continue it or choose another --out")
    if study.has_spec():  # --resume: the same recipe, presets and overrides, or an explicit --allow-changes
        changes = config_changes(study.read_spec(), yaml.safe_load(yaml.safe_dump(merged, sort_keys=False)))
        if changes and not allow_changes:
            raise ConfigError(f"--resume: the study differs from the one started in {str(out)!r} ({describe_changes(changes)}); "
                              "resume with the same recipe, preset and overrides, or pass --allow-changes (finished runs "
                              "keep their own config)")
    for name in ("report.md", "report.html"):  # an old report must not pass for this study's
        (out / name).unlink(missing_ok=True)
    study.write_spec(merged)
    started = time.time()
    todo = []
    for i, cfg in enumerate(runs, 1):
        run = study.run(cfg.name)
        if run.is_finished():
            print(f"[{i}/{len(runs)}] {cfg.name}: finished, skipped", flush=True)
            continue
        if run.is_interrupted() and not resume:
            raise ConfigError(f"run {str(run)!r} was interrupted; pass --resume to continue it")
        todo.append((f"[{i}/{len(runs)}] {cfg.name}", cfg, run))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    record = {"runs": len(runs), "jobs": jobs}
    if jobs > 1:  # one run alone keeps torch's own thread count
        env["OMP_NUM_THREADS"] = str(worker_threads(jobs))
        record["threads_per_run"] = int(env["OMP_NUM_THREADS"])
    _train_runs(todo, jobs, env, allow_changes)
    write_json({"wall_s": time.time() - started, **record}, study.timing_path)  # this invocation's
    return write_report(out)


def _train_runs(todo: list, jobs: int, env: dict, allow_changes: bool) -> None:
    """Train the runs in worker processes, up to `jobs` at once. After a failure no new run starts; the ones already
    running finish (their results stay), then the first failure is raised."""
    running: dict[subprocess.Popen, tuple[str, RunDir]] = {}
    failed = None
    try:
        while todo or running:
            while todo and failed is None and len(running) < jobs:
                label, cfg, run = todo.pop(0)
                again = run.latest_checkpoint() is not None  # else nothing verified to resume from: the run starts over
                print(label + (" (resuming)" if again else ""), flush=True)
                run.claim()
                run.write_config(cfg.to_yaml())
                cmd = [sys.executable, "-m", "patchbench.studies.worker", str(run)] + (["--resume"] if again else [])
                cmd += ["--allow-changes"] if again and allow_changes else []
                running[subprocess.Popen(cmd, env=env)] = (cfg.name, run)
            if not running:
                break
            proc = _wait_any(running)
            name, run = running.pop(proc)
            if proc.returncode in (130, -2):  # the worker was interrupted (Ctrl-C reaches every process)
                raise KeyboardInterrupt
            if proc.returncode != 0 and failed is None:
                failed = ConfigError(f"run {name!r} failed (exit {proc.returncode}); its directory is {run}; "
                                     "fix the cause and rerun with --resume")
    finally:
        _stop(running)
    if failed is not None:
        raise failed


def _wait_any(running: dict[subprocess.Popen, tuple]) -> subprocess.Popen:
    """The first of the running workers to exit."""
    while True:
        for proc in running:
            if proc.poll() is not None:
                return proc
        time.sleep(0.2)


def _stop(running: dict[subprocess.Popen, tuple]) -> None:
    """Interrupt workers still running (after Ctrl-C, or a failure of this process): each keeps its newest checkpoint,
    from which --resume continues."""
    deadline = time.time() + 2  # a Ctrl-C at the terminal reached them too: let them exit on their own first
    while time.time() < deadline and any(proc.poll() is None for proc in running):
        time.sleep(0.1)
    for proc in running:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in running:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
