"""Training FLOPs of a run, counted once per run by the study (not inside the training loop).

The count is the one `patchbench bench` uses (torch's FlopCounterMode with the bench's corrections for
CPU attention, fused-attention backward and depthwise-conv backward), applied to the run's own task
loss on a few real training examples: forward + backward per example. Cumulative training FLOPs at
optimizer step s are then s × examples per step × FLOPs per example (the optimizer update and data
loading are not counted, as in the bench).

    RUN/flops.json   {"train_flops_per_example", "examples_per_step", "counter"}   (RunDir.flops_path)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from patchbench.engine.flops import count_flops
from patchbench.rundir import RunDir, write_json

COUNTER = "torch FlopCounterMode + patchbench bench corrections (forward + backward, 2 FLOPs per multiply-add)"


def train_flops_per_example(task, model: torch.nn.Module, n: int = 4) -> float:
    """Forward + backward FLOPs of the task's training loss, per example, on the first `n` training examples."""
    batch = next(iter(task.batches(iter([np.arange(min(n, task.num_train))]))))
    first = next(iter(batch.values()))
    size = int(first.shape[0])
    model.train()

    def step() -> None:
        task.train_loss(model, batch).backward()

    try:
        return count_flops(step) / size
    finally:
        model.zero_grad(set_to_none=True)


def run_flops(run_dir: str | Path) -> dict[str, Any]:
    """The run's FLOPs record: read from RUN/flops.json, else counted from its config.yaml and written there."""
    from patchbench.engine.trainer import build
    from patchbench.recipe import run_config_from_dict

    run = RunDir(run_dir)
    if run.flops_path.is_file():
        return json.loads(run.flops_path.read_text())
    cfg = run_config_from_dict(run.read_config())
    torch.manual_seed(cfg.train.seed)
    task, cfg, model = build(cfg)
    world = int((run.read_summary() or {}).get("world_size") or 1)
    record = {"train_flops_per_example": train_flops_per_example(task, model),
              "examples_per_step": cfg.train.batch_size * cfg.train.accum_steps * world, "counter": COUNTER}
    write_json(record, run.flops_path)
    return record
