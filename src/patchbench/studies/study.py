"""A study: a recipe's runs (× seeds), each trained in a fresh process, then one report.

    STUDY/study.yaml            the merged recipe (preset + overrides applied)
    STUDY/runs/<run>/...        one run directory per run (see engine/trainer.py)
    STUDY/report.md, report.html, curves_val.png, curves_train.png, curves.csv, results.json

Each run is trained in its own Python process so peak memory and allocator state of one model
never leak into another's measurements. `--resume` skips finished runs and resumes killed ones.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import yaml

from patchbench.config import ConfigError, RunConfig, expand_runs, load_recipe, resolve_recipe
from patchbench.engine.trainer import check_writable


@dataclasses.dataclass
class StudyConfig:
    seeds: list[int] = dataclasses.field(default_factory=list)  # repeat every run per seed
    columns: list[str] = dataclasses.field(default_factory=list)  # extra config keys in the table
    baseline: str = ""  # run the relative % compare against ("" = the other run, or the first)
    title: str = ""
    pivot: bool = False  # runs named COLUMN-ROW (fpt-bit_xor): add a ROW × COLUMN table of the final metric


def study_config(merged: dict) -> StudyConfig:
    from patchbench.config import build_dataclass

    return build_dataclass(StudyConfig, merged.get("study"), "study")


def expand_study(merged: dict) -> list[RunConfig]:
    sc = study_config(merged)
    runs = expand_runs(merged)
    if not sc.seeds:
        return runs
    return [dataclasses.replace(r, name=f"{r.name}-s{s}", train=dataclasses.replace(r.train, seed=s))
            for r in runs for s in sc.seeds]


def run_study(recipe: str, preset: str | None, overrides: list[str], out: Path, resume: bool = False) -> Path:
    from patchbench.studies.report import write_report

    merged = resolve_recipe(load_recipe(recipe), preset, overrides, recipe)
    merged.setdefault("name", Path(recipe).stem)
    merged["preset"] = preset or "default"
    runs = expand_study({k: v for k, v in merged.items() if k != "preset"})
    check_writable(out)
    if (out / "study.yaml").exists() and not resume:
        raise ConfigError(f"study directory {str(out)!r} already holds a study; pass --resume to continue it or choose another --out")
    for name in ("report.md", "report.html"):  # an old report must not pass for this study's
        (out / name).unlink(missing_ok=True)
    (out / "study.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
    for i, cfg in enumerate(runs, 1):
        run_dir = out / "runs" / cfg.name
        if (run_dir / "summary.json").is_file():
            print(f"[{i}/{len(runs)}] {cfg.name}: finished, skipped", flush=True)
            continue
        again = (run_dir / "checkpoints" / "latest.json").is_file()
        if again and not resume:
            raise ConfigError(f"run {str(run_dir)!r} was interrupted; pass --resume to continue it")
        print(f"[{i}/{len(runs)}] {cfg.name}" + (" (resuming)" if again else ""), flush=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
        cmd = [sys.executable, "-m", "patchbench.studies.worker", str(run_dir)] + (["--resume"] if again else [])
        rc = subprocess.call(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if rc != 0:
            raise ConfigError(f"run {cfg.name!r} failed (exit {rc}); its directory is {run_dir}; fix the cause and rerun with --resume")
    return write_report(out)
