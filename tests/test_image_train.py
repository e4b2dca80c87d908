"""End to end on tiny generated images: train with keep_best, check that RUN/best/ holds the weights of the
lowest validation loss, the prediction grid and TensorBoard tags; a class-count change refuses to resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from patchbench.engine.trainer import build, train
from patchbench.errors import CheckpointError, ConfigError
from patchbench.recipe import build_run_config


def write_folder(root, classes=("dark", "light"), per_class=24, seed=0):
    """Class folders of 8x8 PNGs: each class has its own mean brightness, plus noise."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        level = 40 + 170 * c / max(len(classes) - 1, 1)
        for i in range(per_class):
            px = np.clip(rng.normal(level, 60, (8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(root / name / f"{i}.png")
    return root


def recipe(path, **train):
    return {
        "name": "tiny", "task": "image_classification",
        "data": {"dataset": "folder", "path": str(path), "val_fraction": 0.25, "hflip": True},
        "model": {"name": "convmixer", "dim": 8, "depth": 1, "kernel": 3, "patch": 2},
        "optim": {"name": "adam", "lr": 0.2, "clip": 0.0},  # a large step: validation loss goes up and down
        "train": {"batch_size": 6, "accum_steps": 1, "max_steps": 12, "eval_every": 1, "keep_best": True,
                  "progress": False, "sample_tokens": 0, "final_metric_window": 3, **train},
    }


@pytest.mark.slow
def test_best_checkpoint_keeps_the_lowest_validation_loss(tmp_path):
    data = write_folder(tmp_path / "imgs")
    cfg = build_run_config(recipe(data, max_steps=8))
    summary = train(cfg, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    vals = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    assert len(vals) == 8 and all("val_accuracy" in r for r in rows if "val_loss" in r)
    best_step, best_loss = min(vals, key=lambda sv: sv[1])
    assert best_step < vals[-1][0], f"the lowest validation loss should not be the last one here: {vals}"
    meta = json.loads((tmp_path / "run" / "best" / "meta.json").read_text())
    assert meta["step"] == best_step and meta["val_loss"] == pytest.approx(best_loss)
    assert summary["best_val_loss"] == pytest.approx(best_loss)
    assert summary["higher_is_better"] is True and summary["data"]["classes"] == 2

    # the saved weights really are that model: evaluating them gives the recorded loss
    from safetensors.torch import load_model

    task, _, model = build(cfg)
    load_model(model, str(tmp_path / "run" / "best" / "model.safetensors"))
    again = task.evaluate(model, torch.device("cpu"), lambda: torch.autocast("cpu", enabled=False))
    assert again["val_loss"] == pytest.approx(best_loss, rel=1e-5)

    assert (tmp_path / "run" / "predictions.png").stat().st_size > 1000
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(tmp_path / "run" / "tb")).Reload().Tags()["scalars"]
    assert {"Loss/train", "Loss/validation", "Accuracy/Test"} <= set(tags)


def test_resume_with_another_class_count_is_refused(tmp_path):
    two = write_folder(tmp_path / "two", per_class=8)
    three = write_folder(tmp_path / "three", classes=("a", "b", "c"), per_class=8)
    train(build_run_config(recipe(two, max_steps=4, stop_after_steps=2)), tmp_path / "run")
    with pytest.raises(ConfigError, match="model.num_classes 2 -> 3"):  # the changed config is named first
        train(build_run_config(recipe(three, max_steps=4)), tmp_path / "run", resume=True)
    with pytest.raises(CheckpointError, match="parameter shapes differ"):  # and accepting it cannot make the shapes fit
        train(build_run_config(recipe(three, max_steps=4)), tmp_path / "run", resume=True, allow_changes=True)
