"""Atomic checkpoints: safetensors weights + a weights_only torch state + meta.json.

    RUN/checkpoints/step-000040/{model.safetensors, state.pt, meta.json}
    RUN/checkpoints/latest.json    -> {"step": 40, "dir": "step-000040"}   (written last, atomically)

A checkpoint directory is written under a temporary name and renamed into place, so a killed run
leaves either the old checkpoint or the new one, never half of one.
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

FORMAT = "patchbench-checkpoint/1"


class CheckpointError(ValueError):
    pass


def shapes_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
    return h.hexdigest()[:16]


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, state: dict[str, Any], meta: dict[str, Any], keep: int = 2) -> Path:
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    final = root / name
    tmp = root / f".{name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    torch.save(state, tmp / "state.pt")
    full_meta = {"format": FORMAT, "step": step, "shapes": shapes_digest(model), **meta}
    (tmp / "meta.json").write_text(json.dumps(full_meta, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    latest = root / f".latest.tmp{os.getpid()}"
    latest.write_text(json.dumps({"step": step, "dir": name}))
    os.replace(latest, root / "latest.json")
    olds = sorted(p for p in root.glob("step-*") if p.is_dir() and p.name != name)
    for p in olds[: max(len(olds) - (keep - 1), 0)]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def save_weights(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Weights only (e.g. the best model), same atomic directory swap."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    (tmp / "meta.json").write_text(json.dumps({"format": FORMAT, "shapes": shapes_digest(model), **meta}, indent=2))
    old = path.with_name(f".{path.name}.old{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / "checkpoints" / "latest.json"
    if not pointer.is_file():
        return None
    try:
        entry = json.loads(pointer.read_text())
        return run_dir / "checkpoints" / entry["dir"]
    except (ValueError, KeyError):
        raise CheckpointError(f"checkpoint pointer {pointer}: corrupt; delete it to start over") from None


def load_checkpoint(path: Path, model: nn.Module, expect: dict[str, Any]) -> dict[str, Any]:
    """Load weights into `model` and return the training state. Foreign or corrupt -> CheckpointError."""
    meta_path = path / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        raise CheckpointError(f"checkpoint {path}: missing or unreadable meta.json; not a patchbench checkpoint") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    for key, want in expect.items():
        if meta.get(key) != want:
            raise CheckpointError(f"checkpoint {path}: {key} is {meta.get(key)!r} but this run has {want!r}; it belongs to another run")
    if meta.get("shapes") != shapes_digest(model):
        raise CheckpointError(f"checkpoint {path}: parameter shapes differ from this model's; it belongs to another model config")
    try:
        load_model(model, str(path / "model.safetensors"), strict=True)
    except Exception as e:  # noqa: BLE001 - safetensors raises several kinds on corrupt files
        raise CheckpointError(f"checkpoint {path / 'model.safetensors'}: cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    try:
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {path / 'state.pt'}: cannot be read safely ({type(e).__name__})") from None
    state["meta"] = meta
    return state
