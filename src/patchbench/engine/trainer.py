"""One run: build task + model, train with one flat loop, validate, checkpoint, measure, summarise.

    RUN_DIR/config.yaml        resolved config (re-creates the run)
    RUN_DIR/metrics.jsonl      {"step", "train_loss", "lr"} per optimizer step; {"step", "val_loss", ..., "train_time_s",
                               "train_examples_per_s", peak memory} per validation (every epoch in the image recipes)
    RUN_DIR/tb/                TensorBoard events
    RUN_DIR/checkpoints/       safetensors + state, atomic (see checkpoint.py)
    RUN_DIR/best/              weights of the lowest validation loss (train.keep_best)
    RUN_DIR/sample.txt         a sample after training (text tasks)
    RUN_DIR/summary.json       written last: its presence means the run finished
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from patchbench import registry
from patchbench.config import ConfigError, RunConfig, save_json
from patchbench.engine import distributed as D
from patchbench.engine.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint, save_weights
from patchbench.engine.measure import device_name, peak_memory_bytes, reset_peak, resolve_device
from patchbench.engine.optim import build_optimizer, build_schedule
from patchbench.models.base import count_params, model_bytes
from patchbench.tasks.base import to_device

TB_TAGS = {"train_loss": "Loss/train", "val_loss": "Loss/validation", "val_accuracy": "Accuracy/Test", "lr": "LearningRate"}


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_precision(spec: str, device: torch.device) -> torch.dtype | None:
    """None = fp32 (no autocast)."""
    if spec == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    table = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if spec not in table:
        raise ConfigError(f"train.precision: {spec!r}; valid: auto, fp32, bf16, fp16")
    if spec == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision: fp16 needs a CUDA device; use fp32 or bf16 on CPU")
    return table[spec]


def check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output directory {str(run_dir)!r} is not writable ({e.strerror}); choose another with --out") from None


def build(cfg: RunConfig):
    """Task, the data-completed config, and the model (on CPU)."""
    task = registry.get_task(cfg.task.name).builder(cfg)
    cfg = dataclasses.replace(cfg, model=task.prepare(cfg.model))
    model = registry.create_model(cfg.model)
    task.check_model(model)
    return task, cfg, model


def index_batches(num: int, batch: int, seed: int, start_micro: int, info: D.DistInfo) -> Iterator[np.ndarray]:
    """This rank's example indices for every micro-batch from `start_micro` on, epoch after epoch.
    Epoch e visits a permutation seeded by (seed, e); a global micro-batch of batch*world examples
    is split by rank, so the examples per step do not depend on the world size."""
    glob = batch * info.world_size
    per_epoch = num // glob
    m = start_micro
    while True:
        epoch, within = divmod(m, per_epoch)
        perm = np.random.default_rng([seed, epoch]).permutation(num)
        for j in range(within, per_epoch):
            lo = j * glob + info.rank * batch
            yield perm[lo:lo + batch]
            m += 1


def _read_metrics(path: Path, upto_step: int) -> list[dict]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["step"] <= upto_step]


def train(cfg: RunConfig, run_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    run_dir = Path(run_dir)
    device = resolve_device(cfg.train.device)
    info = D.init_from_env(device.type)
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", info.local_rank)
    if resume and (run_dir / "summary.json").is_file():  # finished: nothing to resume, keep its figures
        print(f"[{cfg.name}] {run_dir} already finished; nothing to resume", flush=True)
        return json.loads((run_dir / "summary.json").read_text())
    if info.is_main:
        check_writable(run_dir)
        if not resume and (run_dir / "checkpoints").exists():
            raise ConfigError(f"output directory {str(run_dir)!r} already holds a run; pass --resume to continue it or choose another --out")
    seed_everything(cfg.train.seed, cfg.train.deterministic and device.type == "cpu")

    task, cfg, model = build(cfg)
    tc = cfg.train
    model.to(device)
    if tc.channels_last:
        model.to(memory_format=torch.channels_last)
    raw_model = model  # saved and sampled unwrapped; never the compile/DDP wrapper
    params = count_params(raw_model)
    amp_dtype = resolve_precision(tc.precision, device)

    def autocast():
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=amp_dtype)

    per_micro = tc.batch_size * info.world_size
    micro_per_epoch = task.num_train // per_micro
    steps_per_epoch = micro_per_epoch // tc.accum_steps
    if steps_per_epoch < 1:
        raise ConfigError(f"train.batch_size: {task.num_train} training examples cannot fill one step of {per_micro}×{tc.accum_steps}; lower train.batch_size or train.accum_steps")
    total_steps = tc.max_steps or max(int(tc.epochs * steps_per_epoch), 1)

    optimizer = build_optimizer(raw_model, cfg.optim, device)
    schedule = build_schedule(optimizer, cfg.optim, total_steps)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)

    start_step, history = 0, []
    expect = {"model": cfg.model.name, "task": cfg.task.name, "run": cfg.name}
    if resume:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise CheckpointError(f"--resume: {run_dir} has no checkpoint to resume from")
        state = load_checkpoint(ckpt, raw_model, expect)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"])
        start_step = int(state["step"])
        history = _read_metrics(run_dir / "metrics.jsonl", start_step)
        prior_train_time = float(state.get("train_time", 0.0))
    else:
        prior_train_time = 0.0

    model = raw_model
    if info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if info.rank > 0:  # DDP broadcast rank 0's weights; dropout masks must differ between ranks
            torch.manual_seed(tc.seed + 7919 * info.rank + 104729 * start_step)
    if tc.compile:  # compile(DDP(model)) lets gradient all-reduce overlap the backward
        model = torch.compile(model)

    writer = None
    if info.is_main:
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
        with open(run_dir / "metrics.jsonl", "w") as f:  # rewritten up to the resume point
            f.writelines(json.dumps(r) + "\n" for r in history)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"), purge_step=start_step if resume else None)
        writer.add_custom_scalars({"Loss": {"train vs validation": ["Multiline", ["Loss/train", "Loss/validation"]]}})
        print(f"[{cfg.name}] {cfg.model.name}: {params['total']:,} parameters ({params['trainable']:,} trainable), "
              f"{total_steps} steps of {per_micro * tc.accum_steps} examples, device {device}, "
              f"precision {amp_dtype or 'fp32'}" + (f", world {info.world_size}" if info.enabled else ""), flush=True)

    bar = None
    if tc.progress and info.is_main:
        import sys

        from tqdm import tqdm

        tty = sys.stderr.isatty()  # in a log file, redraw rarely instead of every step
        bar = tqdm(total=total_steps, initial=start_step, desc=cfg.name, unit="step", dynamic_ncols=True,
                   mininterval=0.2 if tty else 30.0)

    metrics_file = open(run_dir / "metrics.jsonl", "a") if info.is_main else None  # noqa: SIM115 - open for the whole loop
    metric = task.primary_metric
    val_history = [r[metric] for r in history if metric in r]
    val_losses = [r["val_loss"] for r in history if "val_loss" in r]
    best_val = min(val_losses, default=float("inf"))
    last_val_loss = val_losses[-1] if val_losses else None
    batches = task.batches(index_batches(task.num_train, tc.batch_size, tc.seed, start_step * tc.accum_steps, info))
    ckpt_every = tc.checkpoint_every or tc.eval_every
    stop_at = min(total_steps, start_step + tc.stop_after_steps) if tc.stop_after_steps else total_steps

    def checkpoint(step: int, train_time: float) -> None:
        if not info.is_main:
            return
        state = {"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "scaler": scaler.state_dict(),
                 "rng_cpu": torch.get_rng_state(), "step": step, "train_time": train_time}
        if device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state()
        save_checkpoint(run_dir, step, raw_model, state, expect)

    # ------------------------------------------------------------------ the training loop
    model.train()
    reset_peak(device)
    pending: list[tuple[int, torch.Tensor, float]] = []  # (step, loss on device, lr): flushed at sync points
    train_time, examples, seg_start = prior_train_time, 0, time.perf_counter()
    seg_examples, seg_time = 0, prior_train_time  # throughput between validations
    step = start_step
    for step in range(start_step + 1, stop_at + 1):
        loss_sum = torch.zeros((), device=device)
        for micro in range(tc.accum_steps):
            batch = to_device(next(batches), device)
            with D.maybe_no_sync(model, sync=micro == tc.accum_steps - 1), autocast():
                loss = task.train_loss(model, batch) / tc.accum_steps
            scaler.scale(loss).backward()
            loss_sum += loss.detach()
        if cfg.optim.clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.optim.clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        pending.append((step, loss_sum, schedule.get_last_lr()[0]))
        schedule.step()
        examples += per_micro * tc.accum_steps
        if bar is not None:
            bar.update(1)

        evaluate = step % tc.eval_every == 0 or step == total_steps  # a stop is not a validation point
        if not (evaluate or step % ckpt_every == 0 or step == stop_at):
            continue
        # ---- sync point: time the training segment, flush losses, validate, checkpoint
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_time += time.perf_counter() - seg_start
        losses = D.all_reduce_mean(torch.stack([p[1] for p in pending]), info).tolist()
        rows = [{"step": s, "train_loss": v, "lr": lr} for (s, _, lr), v in zip(pending, losses)]
        pending = []
        if evaluate:
            val = task.evaluate(raw_model, device, autocast)
            val_history.append(val[metric])
            last_val_loss = val["val_loss"]
            rate = (examples - seg_examples) / max(train_time - seg_time, 1e-9)  # since the last validation
            rows.append({"step": step, **val, "train_time_s": train_time, "train_examples_per_s": rate,
                         **{f"{k}_bytes": v for k, v in peak_memory_bytes(device).items()}})
            seg_examples, seg_time = examples, train_time
            if tc.keep_best and info.is_main and val["val_loss"] < best_val:  # best checkpoint by validation loss
                best_val = val["val_loss"]
                save_weights(run_dir / "best", raw_model, {"step": step, "val_loss": best_val, **expect})
        if info.is_main:
            for r in rows:
                metrics_file.write(json.dumps(r) + "\n")
                for k, v in r.items():
                    if k != "step":
                        writer.add_scalar(TB_TAGS.get(k, k), v, r["step"])
            metrics_file.flush()
            if bar is not None:
                bar.set_postfix(loss=f"{losses[-1]:.3f}", val=f"{val_history[-1]:.3f}" if val_history else "-",
                                ex_s=f"{examples / max(train_time - prior_train_time, 1e-9):.1f}")
        if step % ckpt_every == 0 or step == stop_at:
            checkpoint(step, train_time)
        D.barrier(info)
        seg_start = time.perf_counter()

    if bar is not None:
        bar.close()
    if metrics_file is not None:
        metrics_file.close()
    finished = step >= total_steps
    summary = None
    if info.is_main and finished:
        seg = train_time - prior_train_time
        n_final = min(tc.final_metric_window, len(val_history))
        window = val_history[-n_final:] if n_final else []
        summary = {
            "name": cfg.name, "model": cfg.model.name, "task": cfg.task.name, "objective": task.objective,
            "steps": total_steps, "epochs": total_steps / steps_per_epoch,
            "params_total": params["total"], "params_trainable": params["trainable"],
            "model_bytes": model_bytes(raw_model),
            **{f"{k}_bytes": v for k, v in peak_memory_bytes(device).items()},
            "train_examples_per_s": examples / seg if seg > 0 else None,
            "train_items_per_s": examples * task.items_per_example() / seg if seg > 0 else None,
            "train_time_s": train_time,
            "time_per_epoch_s": train_time / (total_steps / steps_per_epoch),
            "final_metric": float(np.mean(window)) if window else None,
            "final_metric_name": f"mean of last {n_final} {metric}",
            "higher_is_better": task.higher_is_better,
            "best_val_loss": best_val if tc.keep_best else None,
            "final_val_loss": last_val_loss,
            "device": device_name(device), "precision": str(amp_dtype or "fp32"),
            "world_size": info.world_size, "torch": torch.__version__, "resumed": resume,
            "data": task.describe(),
        }
        text = task.sample(raw_model, device, tc.sample_prompt, tc.sample_tokens, 50, 43) if tc.sample_tokens else None
        if text is not None:
            (run_dir / "sample.txt").write_text(text)
            summary["sample"] = text
        writer.add_text("sample", text or "", total_steps)
        after = getattr(task, "after_training", None)  # task extras, e.g. a grid of sample predictions
        if after is not None:
            after(raw_model, device, run_dir)
        save_json(summary, run_dir / "summary.json")
    if writer is not None:
        writer.close()
    D.barrier(info)
    D.shutdown(info)
    return summary or {"name": cfg.name, "stopped_at_step": step, "finished": False}


def load_run(run_dir: str | Path):
    """(cfg, model) of a finished or checkpointed run, weights from its latest checkpoint."""
    from patchbench.config import run_config_from_dict

    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"run directory {str(run_dir)!r}: no config.yaml; give a directory written by patchbench train")
    cfg = run_config_from_dict(yaml.safe_load(path.read_text()))
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise CheckpointError(f"run directory {str(run_dir)!r}: no checkpoint to load weights from")
    task, cfg2, model = build(cfg)
    load_checkpoint(ckpt, model, {"model": cfg.model.name, "task": cfg.task.name, "run": cfg.name})
    return task, cfg2, model
