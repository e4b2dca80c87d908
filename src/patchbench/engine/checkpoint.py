"""Atomic checkpoints: safetensors weights + a weights_only torch state + meta.json.

Where they live (RUN/checkpoints/step-NNNNNN/, the latest.json pointer, RUN/best/) is RunDir's
business (rundir.py); this module writes and checks their contents. A checkpoint directory is
written under a temporary name and renamed into place, so a killed run leaves either the old
checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from patchbench.errors import CheckpointError
from patchbench.rundir import META, STATE, WEIGHTS, RunDir

__all__ = ["FORMAT", "CheckpointError", "shapes_digest", "save_checkpoint", "save_weights", "latest_checkpoint", "load_checkpoint"]

FORMAT = "patchbench-checkpoint/1"


def shapes_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
    return h.hexdigest()[:16]


def _write_dir(final: Path, model: nn.Module, meta: dict[str, Any], state: dict[str, Any] | None) -> None:
    """Weights (+ state) + meta into a temporary sibling, then swapped into place."""
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / WEIGHTS))
    if state is not None:
        torch.save(state, tmp / STATE)
    (tmp / META).write_text(json.dumps({"format": FORMAT, "shapes": shapes_digest(model), **meta}, indent=2))
    old = final.with_name(f".{final.name}.old{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


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
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError):
        raise CheckpointError(f"checkpoint {path}: missing or unreadable {META}; not a patchbench checkpoint") from None
    if meta.get("format") != FORMAT:
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
    state["meta"] = meta
    return state
