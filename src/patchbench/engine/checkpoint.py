"""Atomic, verified checkpoints: safetensors weights + a weights_only torch state + meta.json.

Where they live (RUN/checkpoints/step-NNNNNN/, the latest.json pointer, RUN/best/) is RunDir's
business (rundir.py); this module writes and loads their contents. A checkpoint folder is written
under a temporary name (`.step-000040.tmpPID`), its files fsynced and their sha256 recorded in
meta.json (written last), and only then renamed into place; a write that fails (a full disk, Ctrl-C)
removes its temporary and leaves the previous checkpoints as they were. The two newest are kept, so a
damaged newest one has a predecessor: RunDir.find_checkpoint takes the newest that verifies.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from patchbench.durable import atomic_write_text, fsync_dir, fsync_path, sha256_file
from patchbench.errors import CheckpointError
from patchbench.rundir import CHECKPOINT_FORMATS, META, STATE, WEIGHTS, RunDir, read_checkpoint_meta

__all__ = ["FORMAT", "CheckpointError", "shapes_digest", "save_checkpoint", "save_weights", "latest_checkpoint", "load_checkpoint"]

FORMAT, *_ = CHECKPOINT_FORMATS  # /2: meta.json lists the sha256 of every file ("files"); /1 (readable) did not


def shapes_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
    return h.hexdigest()[:16]


def _as_os_error(e: Exception, where: Path) -> OSError:
    """safetensors (SafetensorError) and torch.save (RuntimeError) report a full disk or a refused write in
    their own exception types; the user sees it as what it is, an OSError naming the folder."""
    if isinstance(e, OSError):
        return e
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    code = re.search(r"code: (\d+)", text) or re.search(r"errno (\d+)", text, re.I)
    number = int(code.group(1)) if code else (errno.ENOSPC if shutil.disk_usage(where).free == 0 else errno.EIO)
    return OSError(number, f"{os.strerror(number)} (writing a checkpoint: {text[:120]})", str(where))


def _write_dir(final: Path, model: nn.Module, meta: dict[str, Any], state: dict[str, Any] | None) -> None:
    """Weights (+ state) + checksummed meta into a temporary sibling, fsynced, then renamed into place.
    Any failure (ENOSPC, EIO, Ctrl-C) removes the temporary and leaves `final` as it was."""
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    old = final.with_name(f".{final.name}.old{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_model(model, str(tmp / WEIGHTS))
        if state is not None:
            torch.save(state, tmp / STATE)
        files = {}
        for name in (WEIGHTS, STATE) if state is not None else (WEIGHTS,):
            fsync_path(tmp / name)
            files[name] = sha256_file(tmp / name)
        atomic_write_text(tmp / META, json.dumps({"format": FORMAT, "shapes": shapes_digest(model), **meta, "files": files}, indent=2))
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not final.exists():
            os.replace(old, final)  # put the previous one back
        if isinstance(e, (RuntimeError, ValueError)) or type(e).__name__ == "SafetensorError":
            raise _as_os_error(e, final.parent) from None
        raise
    shutil.rmtree(old, ignore_errors=True)
    fsync_dir(final.parent)


def save_checkpoint(run: RunDir | Path, step: int, model: nn.Module, state: dict[str, Any], meta: dict[str, Any], keep: int = 2) -> Path:
    """Checkpoint `step`, point latest.json at it, keep the newest `keep`."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    final = run.checkpoint_dir(step)
    _write_dir(final, model, {"step": step, **meta}, state)
    run.set_latest(step)
    olds = [p for p in run.all_checkpoints() if p != final]
    for p in olds[: max(len(olds) - (keep - 1), 0)]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def save_weights(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Weights only (e.g. the best model, RunDir.best_dir), same atomic directory swap."""
    _write_dir(Path(path), model, meta, None)


def latest_checkpoint(run: RunDir | Path) -> Path | None:
    return (run if isinstance(run, RunDir) else RunDir(run)).latest_checkpoint()


def load_checkpoint(path: Path, model: nn.Module, expect: dict[str, Any]) -> dict[str, Any]:
    """Load weights into `model` and return the training state. Foreign or corrupt -> CheckpointError."""
    meta = read_checkpoint_meta(path)
    if meta.get("format") not in CHECKPOINT_FORMATS:
        raise CheckpointError(f"checkpoint {path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    for key, want in expect.items():
        if meta.get(key) != want:
            raise CheckpointError(f"checkpoint {path}: {key} is {meta.get(key)!r} but this run has {want!r}; it belongs to another run")
    if meta.get("shapes") != shapes_digest(model):
        raise CheckpointError(f"checkpoint {path}: parameter shapes differ from this model's; it belongs to another model config")
    try:
        load_model(model, str(path / WEIGHTS), strict=True)
    except Exception as e:  # noqa: BLE001 - safetensors raises several kinds on corrupt files
        raise CheckpointError(f"checkpoint {path / WEIGHTS}: cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    try:
        state = torch.load(path / STATE, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {path / STATE}: cannot be read safely ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("step") != meta.get("step"):
        got = state.get("step") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"checkpoint {path / STATE}: holds step {got!r} but {META} says {meta.get('step')!r}; it was replaced")
    state["meta"] = meta
    return state
