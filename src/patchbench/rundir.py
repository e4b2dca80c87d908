"""The run and study directory layout, and the one place that reads and writes it.

    RUN/config.yaml              resolved config (re-creates the run)
    RUN/metrics.jsonl            {"step", "train_loss", "lr"} per optimizer step; {"step", "val_loss", ...} per validation
    RUN/tb/                      TensorBoard events
    RUN/checkpoints/step-000040/{model.safetensors, state.pt, meta.json}
    RUN/checkpoints/latest.json  -> {"step": 40, "dir": "step-000040"}   (written last, atomically)
    RUN/best/{model.safetensors, meta.json}   weights of the lowest validation loss (train.keep_best)
    RUN/sample.txt               a sample after training (text tasks)
    RUN/predictions.png          task extras after training (image classification)
    RUN/summary.json             written last: its presence means the run finished

    STUDY/study.yaml             the merged recipe (preset + overrides applied)
    STUDY/runs/<run>/            one run directory per run

No other module spells these names: the trainer, checkpoints, studies, reports, tasks and models
all go through `RunDir` and `StudyDir`. Imports only errors.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import yaml

from patchbench.errors import CheckpointError, ConfigError

WEIGHTS = "model.safetensors"  # in a checkpoint directory and in best/
STATE = "state.pt"  # optimizer, schedule, scaler, RNG and step (weights_only torch file)
META = "meta.json"  # format, step, shapes digest and the run it belongs to


def write_json(obj: Any, path: Path) -> None:
    """Atomic: a reader sees the old file or the new one, never half of one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class RunDir:
    """One run's directory. Paths are properties; readers return plain data, writers are atomic where a
    half-written file would mislead (summary, checkpoint pointer)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    # ---------------------------------------------------------------- layout
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def sample_path(self) -> Path:
        return self.path / "sample.txt"

    @property
    def predictions_path(self) -> Path:
        return self.path / "predictions.png"

    @property
    def tb_dir(self) -> Path:
        return self.path / "tb"

    @property
    def best_dir(self) -> Path:
        return self.path / "best"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def latest_pointer(self) -> Path:
        return self.checkpoints_dir / "latest.json"

    # ---------------------------------------------------------------- state of the run
    def is_finished(self) -> bool:
        return self.summary_path.is_file()

    def holds_run(self) -> bool:
        """Something trained here already (a fresh run must not overwrite it)."""
        return self.checkpoints_dir.exists()

    def is_interrupted(self) -> bool:
        return self.latest_pointer.is_file() and not self.is_finished()

    def check_writable(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write-test-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise ConfigError(f"output directory {str(self.path)!r} is not writable ({e.strerror}); choose another with --out") from None

    # ---------------------------------------------------------------- config
    def write_config(self, yaml_text: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml_text)

    def read_config(self) -> dict:
        """The raw mapping of config.yaml (recipe.run_config_from_dict types it)."""
        if not self.config_path.is_file():
            raise ConfigError(f"run directory {str(self.path)!r}: no config.yaml; give a directory written by patchbench train")
        raw = yaml.safe_load(self.config_path.read_text())
        if not isinstance(raw, dict):
            raise ConfigError(f"run directory {str(self.path)!r}: config.yaml is not a mapping")
        return raw

    # ---------------------------------------------------------------- metrics
    def read_metrics(self, upto_step: int | None = None) -> list[dict]:
        """Every row of metrics.jsonl (training rows and validation rows), optionally up to a step."""
        rows = read_jsonl(self.metrics_path)
        return rows if upto_step is None else [r for r in rows if r["step"] <= upto_step]

    def open_metrics(self, rows: Iterable[dict]) -> IO[str]:
        """Rewrite metrics.jsonl with `rows` (the history up to a resume point) and open it to append."""
        with open(self.metrics_path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        return open(self.metrics_path, "a")  # noqa: SIM115 - the caller keeps it open for the whole run

    # ---------------------------------------------------------------- summary, sample
    def read_summary(self) -> dict | None:
        return json.loads(self.summary_path.read_text()) if self.summary_path.is_file() else None

    def write_summary(self, summary: dict) -> None:
        write_json(summary, self.summary_path)

    def write_sample(self, text: str) -> None:
        self.sample_path.write_text(text)

    # ---------------------------------------------------------------- checkpoints and best weights
    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints_dir / f"step-{step:06d}"

    def all_checkpoints(self) -> list[Path]:
        return sorted(p for p in self.checkpoints_dir.glob("step-*") if p.is_dir())

    def set_latest(self, step: int) -> None:
        """Point latest.json at step's checkpoint (atomically, after the checkpoint is in place)."""
        tmp = self.checkpoints_dir / f".latest.tmp{os.getpid()}"
        tmp.write_text(json.dumps({"step": step, "dir": self.checkpoint_dir(step).name}))
        os.replace(tmp, self.latest_pointer)

    def latest_checkpoint(self) -> Path | None:
        if not self.latest_pointer.is_file():
            return None
        try:
            entry = json.loads(self.latest_pointer.read_text())
            return self.checkpoints_dir / entry["dir"]
        except (ValueError, KeyError):
            raise CheckpointError(f"checkpoint pointer {self.latest_pointer}: corrupt; delete it to start over") from None

    def best_weights(self) -> Path | None:
        path = self.best_dir / WEIGHTS
        return path if path.is_file() else None

    def best_meta(self) -> dict:
        path = self.best_dir / META
        return json.loads(path.read_text()) if path.is_file() else {}

    def weights(self) -> Path | None:
        """The best weights when kept, else the latest checkpoint's; None when nothing was saved."""
        best = self.best_weights()
        if best is not None:
            return best
        ckpt = self.latest_checkpoint()
        path = ckpt / WEIGHTS if ckpt is not None else None
        return path if path is not None and path.is_file() else None


class StudyDir:
    """A study's directory: the merged recipe and one RunDir per run (the report writes its own files here)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def spec_path(self) -> Path:
        return self.path / "study.yaml"

    def run(self, name: str) -> RunDir:
        return RunDir(self.path / "runs" / name)

    def runs(self) -> list[RunDir]:
        return [RunDir(p) for p in sorted((self.path / "runs").glob("*"))]

    def has_spec(self) -> bool:
        return self.spec_path.is_file()

    def write_spec(self, merged: dict) -> None:
        self.spec_path.write_text(yaml.safe_dump(merged, sort_keys=False))

    def read_spec(self) -> dict:
        if not self.spec_path.is_file():
            raise ConfigError(f"study directory {str(self.path)!r}: no study.yaml; give a directory written by patchbench study")
        return yaml.safe_load(self.spec_path.read_text()) or {}

    def check_writable(self) -> None:
        RunDir(self.path).check_writable()
