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
    RUN/flops.json               training FLOPs per example (the study counts them after training)

    RUN/changes.jsonl            what `--resume --allow-changes` accepted, at which step
    RUN/.patchbench-run          marks a folder patchbench owns;  RUN/.lock   the writer's OS lock

    STUDY/study.yaml             the merged recipe (preset + overrides applied)
    STUDY/runs/<run>/            one run directory per run
    STUDY/timing.json            wall time of the last `patchbench study` invocation

No other module spells these names: the trainer, checkpoints, studies, reports, tasks and models
all go through `RunDir` and `StudyDir`. Imports only errors.py and durable.py.

Crash consistency (see durable.py for the file-level rules): every file is written complete or not at
all; metrics.jsonl is append-only and its torn tail is cut before a resume appends to it; a checkpoint
is trusted only when its files match the sha256 its meta.json lists, and latest.json is a hint that
may never lead outside RUN/checkpoints/. `find_checkpoint` returns the newest checkpoint that verifies,
with one note per newer one it skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import yaml

from patchbench import durable
from patchbench.durable import atomic_write_text, dumps_strict
from patchbench.errors import ConfigError

WEIGHTS = "model.safetensors"  # in a checkpoint directory and in best/
STATE = "state.pt"  # optimizer, schedule, scaler, RNG and step (weights_only torch file)
META = "meta.json"  # format, step, shapes digest, the run it belongs to, its config and the sha256 of each file
CHECKPOINT_FORMATS = ("patchbench-checkpoint/2", "patchbench-checkpoint/1")  # written, and still readable (/1: no checksums)
MARKER = ".patchbench-run"
STEP_DIR = re.compile(r"^step-(\d{6,})$")
OWN = ("checkpoints", "tb", "best", "metrics.jsonl", "summary.json", "sample.txt", "changes.jsonl", "predictions.png")


def write_json(obj: Any, path: Path) -> None:
    """Atomic and strict: a reader sees the old file or the new one, and never a bare NaN."""
    atomic_write_text(path, dumps_strict(obj, indent=2, default=str))


def read_jsonl(path: Path) -> list[dict]:
    """The complete rows of a JSON-lines log (a torn last line is not one of them)."""
    return durable.read_jsonl(path)[0]


def read_checkpoint_meta(path: Path) -> dict[str, Any]:
    """meta.json of a checkpoint folder as a mapping; CheckpointError when it is missing, torn or not a mapping."""
    from patchbench.errors import CheckpointError

    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError):
        raise CheckpointError(f"checkpoint {path}: missing or unreadable {META}; not a patchbench checkpoint") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path}: {META} is not a JSON object; not a patchbench checkpoint")
    return meta


def verify_checkpoint(path: Path) -> str | None:
    """Why the checkpoint folder `path` cannot be trusted, or None when every file matches its sha256."""
    from patchbench.errors import CheckpointError

    try:
        meta = read_checkpoint_meta(path)
    except CheckpointError as e:
        return str(e).split(": ", 1)[-1]
    files = meta.get("files")
    if meta.get("format") not in CHECKPOINT_FORMATS:
        return f"format {meta.get('format')!r}, not one patchbench reads ({', '.join(CHECKPOINT_FORMATS)})"
    if meta.get("format") == CHECKPOINT_FORMATS[1] and files is None:
        return None  # written before checksums: loading it is the only check
    if not isinstance(files, dict) or WEIGHTS not in files:
        return f"{META} lists no checksums"
    for name, want in files.items():
        if not isinstance(name, str) or "/" in name or name.startswith("."):
            return f"{META} names a file outside the checkpoint ({name!r})"
        try:
            got = durable.sha256_file(path / name)
        except OSError as e:
            return f"{name}: {e.strerror or 'unreadable'}"
        if got != want:
            return f"{name}: checksum mismatch (damaged or replaced)"
    return None


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

    @property
    def flops_path(self) -> Path:
        """Training FLOPs per example, counted once by the study (studies/flops.py)."""
        return self.path / "flops.json"

    # ---------------------------------------------------------------- state of the run
    def is_finished(self) -> bool:
        return self.summary_path.is_file()

    def holds_run(self) -> bool:
        """patchbench wrote here (the marker, or, from before it, checkpoints, metrics or a summary)."""
        return any((self.path / name).exists() for name in (MARKER, "checkpoints", "metrics.jsonl", "summary.json"))

    def is_interrupted(self) -> bool:
        """A run was started here and did not finish (it may or may not have a checkpoint to resume)."""
        return self.holds_run() and not self.is_finished() and (self.checkpoints_dir.exists() or self.metrics_path.exists())

    def claim(self) -> None:
        """Mark the folder as a run folder; refuse one that holds anything else (the user's files)."""
        if self.path.is_dir() and not self.holds_run():
            others = sorted(p.name for p in self.path.iterdir() if p.name != durable.LOCK_NAME)
            if others:
                more = f" and {len(others) - 1} more" if len(others) > 1 else ""
                raise ConfigError(f"--out {str(self.path)!r} exists and is not a patchbench run folder (it holds {others[0]!r}{more}); "
                                  "choose a new or empty folder")
        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / MARKER).exists():
            atomic_write_text(self.path / MARKER, "patchbench run folder\n")

    def lock(self) -> durable.FolderLock:
        """The one-writer lock, held by the caller until it releases it (or dies)."""
        return durable.FolderLock(self.path, "run folder")

    def remove_temporaries(self) -> None:
        """What an interrupted writer left: `.NAME.tmpPID` / `.NAME.oldPID` files and folders."""
        durable.remove_temporaries(self.path)
        durable.remove_temporaries(self.checkpoints_dir)

    def start_over(self) -> None:
        """Remove what an earlier attempt of this run wrote (the config, the marker and the lock stay)."""
        for name in OWN:
            p = self.path / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()

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
        atomic_write_text(self.config_path, yaml_text)

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
        rows = [r for r in read_jsonl(self.metrics_path) if isinstance(r.get("step"), int)]
        return rows if upto_step is None else [r for r in rows if r["step"] <= upto_step]

    def repair_metrics(self) -> int:
        """Cut a torn last line (a kill in the middle of a write) off metrics.jsonl; returns the bytes cut."""
        return durable.repair_jsonl(self.metrics_path)[1]

    def append_change(self, row: dict) -> None:
        with open(self.path / "changes.jsonl", "a") as f:
            f.write(dumps_strict(row) + "\n")

    def open_metrics(self, rows: Iterable[dict]) -> IO[str]:
        """Rewrite metrics.jsonl with `rows` (the history up to a resume point, atomically) and open it to append."""
        atomic_write_text(self.metrics_path, "".join(dumps_strict(r) + "\n" for r in rows))
        return open(self.metrics_path, "a")  # noqa: SIM115 - the caller keeps it open for the whole run

    # ---------------------------------------------------------------- summary, sample
    def read_summary(self) -> dict | None:
        return json.loads(self.summary_path.read_text()) if self.summary_path.is_file() else None

    def write_summary(self, summary: dict) -> None:
        write_json(summary, self.summary_path)

    def write_sample(self, text: str) -> None:
        atomic_write_text(self.sample_path, text)

    # ---------------------------------------------------------------- checkpoints and best weights
    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints_dir / f"step-{step:06d}"

    def all_checkpoints(self) -> list[Path]:
        """step-NNNNNN folders, oldest first (by step; symlinks and other names are not checkpoints)."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.checkpoints_dir.iterdir()
                 if (m := STEP_DIR.match(p.name)) and p.is_dir() and not p.is_symlink()]
        return [p for _, p in sorted(found)]

    def set_latest(self, step: int | None) -> None:
        """Point latest.json at step's checkpoint (atomically, after the checkpoint is in place); None removes it."""
        if step is None:
            self.latest_pointer.unlink(missing_ok=True)
            return
        atomic_write_text(self.latest_pointer, json.dumps({"step": step, "dir": self.checkpoint_dir(step).name}))

    def pointer_target(self) -> tuple[Path | None, str | None]:
        """The folder latest.json names when it is a step folder inside checkpoints/; else (None, why not)."""
        if not self.latest_pointer.is_file():
            return None, None
        try:
            entry = json.loads(self.latest_pointer.read_text())
        except (OSError, ValueError):
            return None, "latest.json is torn or not JSON; ignored"
        name = entry.get("dir") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not STEP_DIR.match(name):
            return None, f"latest.json names {name!r}, not a step-NNNNNN folder inside {self.checkpoints_dir}; ignored"
        target = self.checkpoints_dir / name
        if target.resolve().parent != self.checkpoints_dir.resolve():
            return None, f"latest.json points outside {self.checkpoints_dir} ({name!r}); ignored"
        return target, None

    def find_checkpoint(self) -> tuple[Path | None, list[str]]:
        """The newest checkpoint that verifies, and one note per newer one skipped (and why)."""
        target, why = self.pointer_target()
        notes = [why] if why else []
        candidates = list(reversed(self.all_checkpoints()))
        if target is not None and target not in candidates:
            notes.append(f"latest.json names {target.name}, which is missing")
        for path in candidates:
            problem = verify_checkpoint(path)
            if problem is None:
                return path, notes
            notes.append(f"{path.name}: {problem}")
        return None, notes

    def latest_checkpoint(self) -> Path | None:
        """The newest checkpoint that verifies (None when none does)."""
        return self.find_checkpoint()[0]

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

    @property
    def timing_path(self) -> Path:
        """Wall time of the last `patchbench study` invocation."""
        return self.path / "timing.json"

    def run(self, name: str) -> RunDir:
        return RunDir(self.path / "runs" / name)

    def runs(self) -> list[RunDir]:
        return [RunDir(p) for p in sorted((self.path / "runs").glob("*"))]

    def has_spec(self) -> bool:
        return self.spec_path.is_file()

    def write_spec(self, merged: dict) -> None:
        atomic_write_text(self.spec_path, yaml.safe_dump(merged, sort_keys=False))

    def holds_study(self) -> bool:
        return self.has_spec() or (self.path / "runs").exists()

    def claim(self) -> None:
        """Refuse a folder that holds anything but a study (the user's files)."""
        if self.path.is_dir() and not self.holds_study() and any(p.name != durable.LOCK_NAME for p in self.path.iterdir()):
            raise ConfigError(f"--out {str(self.path)!r} exists and is not a patchbench study folder; choose a new or empty folder")

    def lock(self) -> durable.FolderLock:
        return durable.FolderLock(self.path, "study folder")

    def read_spec(self) -> dict:
        if not self.spec_path.is_file():
            raise ConfigError(f"study directory {str(self.path)!r}: no study.yaml; give a directory written by patchbench study")
        return yaml.safe_load(self.spec_path.read_text()) or {}

    def check_writable(self) -> None:
        RunDir(self.path).check_writable()
