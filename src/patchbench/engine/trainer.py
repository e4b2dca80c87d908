"""One run: set up task + model, restore, train with one flat loop, validate, checkpoint, summarise.

The run directory's layout (config, metrics, TensorBoard, checkpoints, best weights, sample,
summary) belongs to rundir.RunDir; metrics.jsonl, TensorBoard and the progress bar are written
together by runlog.RunLog.

    train(cfg, run_dir)
      claim        lock the folder, clean temporaries, refuse a user's folder or an existing run (recovery.py)
      setup()      seed, task, model, precision, optimizer, schedule, scaler
      restore()    newest verified checkpoint -> model, optimizer, schedule, scaler, RNG (the inverse of snapshot());
                   a config that differs from the checkpoint's is refused unless --allow-changes
      the loop     accumulate micro-batches, clip, step; at sync points: log, validate(), snapshot()
      summarize()  summary.json, the sample, the task's after_training extras

A loss that turns NaN or infinite stops the run (NonFiniteLoss, one line) before any checkpoint holds
the damage; metrics.jsonl is strict JSON (a non-finite value is written as null).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from patchbench import registry
from patchbench.config import RunConfig
from patchbench.engine import distributed as D
from patchbench.engine import recovery
from patchbench.engine.checkpoint import load_checkpoint, save_checkpoint, save_weights
from patchbench.engine.measure import device_name, peak_memory_bytes, reset_peak, resolve_device
from patchbench.engine.optim import build_optimizer, build_schedule
from patchbench.engine.precision import autocast_factory, resolve_precision
from patchbench.engine.runlog import RunLog
from patchbench.errors import CheckpointError, ConfigError
from patchbench.models.base import count_params, model_bytes
from patchbench.recipe import run_config_from_dict
from patchbench.rundir import RunDir, read_checkpoint_meta
from patchbench.tasks.base import Task, to_device

__all__ = ["train", "build", "load_run", "index_batches", "resolve_precision", "seed_everything", "setup", "snapshot", "restore"]


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def build(cfg: RunConfig) -> tuple[Task, RunConfig, nn.Module]:
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


# --------------------------------------------------------------------------------------------------
# setup, snapshot / restore


class NonFiniteLoss(ConfigError):
    """The loss became NaN or infinite: the run stops before a checkpoint holds the damage."""


@dataclass
class Setup:
    """Everything one run trains with, built once by setup()."""

    cfg: RunConfig  # data-completed by the task
    run: RunDir
    task: Task
    model: nn.Module  # unwrapped: saved, validated and sampled; never the compile/DDP wrapper
    device: torch.device
    info: D.DistInfo
    amp_dtype: torch.dtype | None
    optimizer: torch.optim.Optimizer
    schedule: Any
    scaler: torch.amp.GradScaler
    examples_per_step: int
    steps_per_epoch: int
    total_steps: int
    autocast: Callable[[], AbstractContextManager]

    @property
    def expect(self) -> dict[str, str]:
        """What a checkpoint must belong to."""
        return {"model": self.cfg.model.name, "task": self.cfg.task.name, "run": self.cfg.name}


def setup(cfg: RunConfig, run: RunDir, device: torch.device, info: D.DistInfo) -> Setup:
    seed_everything(cfg.train.seed, cfg.train.deterministic and device.type == "cpu")
    task, cfg, model = build(cfg)
    tc = cfg.train
    model.to(device)
    if tc.channels_last:
        model.to(memory_format=torch.channels_last)
    amp_dtype = resolve_precision(tc.precision, device)
    per_micro = tc.batch_size * info.world_size
    steps_per_epoch = task.num_train // per_micro // tc.accum_steps
    if steps_per_epoch < 1:
        raise ConfigError(f"train.batch_size: {task.num_train} training examples cannot fill one step of {per_micro}×{tc.accum_steps}; "
                          "lower train.batch_size or train.accum_steps")
    total_steps = tc.max_steps or max(int(tc.epochs * steps_per_epoch), 1)
    optimizer = build_optimizer(model, cfg.optim, device)
    return Setup(cfg=cfg, run=run, task=task, model=model, device=device, info=info, amp_dtype=amp_dtype, optimizer=optimizer,
                 schedule=build_schedule(optimizer, cfg.optim, total_steps),
                 scaler=torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16),
                 examples_per_step=per_micro * tc.accum_steps, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                 autocast=autocast_factory(device, amp_dtype))


def snapshot(s: Setup, step: int, train_time: float, examples: int) -> dict[str, Any]:
    """The training state a checkpoint holds besides the weights; restore() reads the same keys."""
    state = {"optimizer": s.optimizer.state_dict(), "schedule": s.schedule.state_dict(), "scaler": s.scaler.state_dict(),
             "rng_cpu": torch.get_rng_state(), "step": step, "train_time": train_time, "examples": examples}
    if s.device.type == "cuda":
        state["rng_cuda"] = torch.cuda.get_rng_state()
    return state


def checkpoint_meta(s: Setup) -> dict[str, Any]:
    """What meta.json records besides format, step and checksums: the run it belongs to and its config."""
    return {**s.expect, "world_size": s.info.world_size, "config": s.cfg.to_dict()}


def restore(s: Setup, allow_changes: bool = False) -> tuple[int, float, int]:
    """Load the newest verified checkpoint into s; returns (step, training seconds so far, examples so far).
    A config that differs from the checkpoint's is refused (naming the keys) unless allow_changes."""
    ckpt = recovery.resume_point(s.run, s.cfg.name, speak=s.info.is_main)
    meta = read_checkpoint_meta(ckpt)  # compared first: a changed config is named before its shapes differ
    changes = {}
    if "config" in meta and meta.get("run") == s.cfg.name:  # older checkpoints did not record their config
        changes = recovery.config_changes(meta["config"], s.cfg.to_dict(), meta.get("world_size", 1), s.info.world_size)
        recovery.check_changes(changes, allow_changes, s.run, int(meta.get("step", 0)), record=s.info.is_main)
    state = load_checkpoint(ckpt, s.model, s.expect)
    step = int(state["step"])
    s.optimizer.load_state_dict(state["optimizer"])
    s.schedule.load_state_dict(state["schedule"])
    if changes:  # accepted: the new optimizer settings take effect (the restored state would keep the old ones)
        apply_optim_config(s.optimizer, s.schedule, s.cfg.optim)
    s.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng_cpu"])
    if s.device.type == "cuda" and "rng_cuda" in state:
        torch.cuda.set_rng_state(state["rng_cuda"])
    return step, float(state.get("train_time", 0.0)), int(state.get("examples", step * s.examples_per_step))


def apply_optim_config(optimizer: torch.optim.Optimizer, schedule: Any, cfg: Any) -> None:
    """After restoring optimizer and schedule state, make an accepted change of optim.* take effect."""
    schedule.base_lrs = [cfg.lr for _ in optimizer.param_groups]
    for group, base in zip(optimizer.param_groups, schedule.base_lrs):
        group["lr"] = base * schedule.lr_lambdas[0](schedule.last_epoch)
        group["weight_decay"] = cfg.weight_decay
        if "betas" in group:
            group["betas"], group["eps"] = tuple(cfg.betas), cfg.eps
        if "momentum" in group:
            group["momentum"] = cfg.momentum
    schedule._last_lr = [g["lr"] for g in optimizer.param_groups]


def wrap(s: Setup, start_step: int) -> nn.Module:
    """DDP and torch.compile around the model; compile(DDP(model)) lets the all-reduce overlap the backward."""
    model = s.model
    if s.info.enabled:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[s.device.index] if s.device.type == "cuda" else None)
        if s.info.rank > 0:  # DDP broadcast rank 0's weights; dropout masks must differ between ranks
            torch.manual_seed(s.cfg.train.seed + 7919 * s.info.rank + 104729 * start_step)
    return torch.compile(model) if s.cfg.train.compile else model


# --------------------------------------------------------------------------------------------------
# what the loop measures, validation, summary


@dataclass
class Tally:
    """Time, examples and validation results so far; a resumed run starts from its metrics.jsonl."""

    metric: str
    train_time: float = 0.0  # seconds of training (validation excluded), over every resumed part
    prior_time: float = 0.0  # of that, before this process
    prior_examples: int = 0  # trained before this process (every resumed part)
    examples: int = 0  # trained by this process
    seg_examples: int = 0  # at the last validation: throughput between validations
    seg_time: float = 0.0
    val_history: list[float] = field(default_factory=list)
    best_val: float = math.inf
    last_val_loss: float | None = None

    @classmethod
    def resume(cls, metric: str, history: list[dict], prior_time: float, prior_examples: int = 0) -> Tally:
        val_losses = [r["val_loss"] for r in history if r.get("val_loss") is not None]
        return cls(metric, prior_time, prior_time, prior_examples, seg_time=prior_time,
                   val_history=[r[metric] for r in history if metric in r],
                   best_val=min(val_losses, default=math.inf), last_val_loss=val_losses[-1] if val_losses else None)

    def add_time(self, device: torch.device, since: float) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.train_time += time.perf_counter() - since

    def postfix(self, loss: float) -> dict[str, str]:
        rate = self.examples / max(self.train_time - self.prior_time, 1e-9)
        return {"loss": f"{loss:.3f}", "val": f"{self.val_history[-1]:.3f}" if self.val_history else "-", "ex_s": f"{rate:.1f}"}


def validate(s: Setup, tally: Tally, step: int) -> dict[str, Any]:
    """Evaluate on held-out data; the metrics row; the best weights when train.keep_best."""
    val = s.task.evaluate(s.model, s.device, s.autocast)
    tally.val_history.append(val[tally.metric])
    tally.last_val_loss = val["val_loss"]
    rate = (tally.examples - tally.seg_examples) / max(tally.train_time - tally.seg_time, 1e-9)  # since the last validation
    tally.seg_examples, tally.seg_time = tally.examples, tally.train_time
    if s.cfg.train.keep_best and s.info.is_main and val["val_loss"] < tally.best_val:
        tally.best_val = val["val_loss"]
        save_weights(s.run.best_dir, s.model, {"step": step, "val_loss": tally.best_val, **s.expect})
    return {"step": step, **val, "train_time_s": tally.train_time, "train_examples_per_s": rate,
            **{f"{k}_bytes": v for k, v in peak_memory_bytes(s.device).items()}}


def summarize(s: Setup, tally: Tally, log: RunLog, resumed: bool) -> dict[str, Any]:
    """summary.json (written last: its presence means the run finished), the sample and the task's extras."""
    tc, examples, seconds = s.cfg.train, tally.prior_examples + tally.examples, tally.train_time  # the whole run, every part
    n_final = min(tc.final_metric_window, len(tally.val_history))
    window = tally.val_history[-n_final:] if n_final else []
    params = count_params(s.model)
    summary = {
        "name": s.cfg.name, "model": s.cfg.model.name, "task": s.cfg.task.name, "objective": s.task.objective,
        "steps": s.total_steps, "epochs": s.total_steps / s.steps_per_epoch,
        "params_total": params["total"], "params_trainable": params["trainable"],
        "model_bytes": model_bytes(s.model),
        **{f"{k}_bytes": v for k, v in peak_memory_bytes(s.device).items()},
        "train_examples_per_s": examples / seconds if seconds > 0 else None,
        "train_items_per_s": examples * s.task.items_per_example() / seconds if seconds > 0 else None,
        "train_time_s": tally.train_time,
        "time_per_epoch_s": tally.train_time / (s.total_steps / s.steps_per_epoch),
        "final_metric": float(np.mean(window)) if window else None,
        "final_metric_name": f"mean of last {n_final} {tally.metric}",
        "higher_is_better": s.task.higher_is_better,
        "best_val_loss": tally.best_val if tc.keep_best else None,
        "final_val_loss": tally.last_val_loss,
        "device": device_name(s.device), "precision": str(s.amp_dtype or "fp32"),
        "world_size": s.info.world_size, "torch": torch.__version__, "resumed": resumed,
        "data": s.task.describe(),
    }
    text = s.task.sample(s.model, s.device, tc.sample_prompt, tc.sample_tokens, 50, 43) if tc.sample_tokens else None
    if text is not None:
        s.run.write_sample(text)
        summary["sample"] = text
    log.text("sample", text or "", s.total_steps)
    s.task.after_training(s.model, s.device, s.run)  # task extras, e.g. a grid of sample predictions
    s.run.write_summary(summary)
    return summary


# --------------------------------------------------------------------------------------------------
# the run


def train(cfg: RunConfig, run_dir: str | Path, resume: bool = False, allow_changes: bool = False) -> dict[str, Any]:
    """Train one run into `run_dir`; rank 0 holds the folder's lock for as long as it runs."""
    run = RunDir(run_dir)
    device = resolve_device(cfg.train.device)
    info = D.init_from_env(device.type)
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", info.local_rank)
    if resume and run.is_finished():  # nothing to resume, keep its figures
        print(f"[{cfg.name}] {run} already finished; nothing to resume", flush=True)
        return run.read_summary()
    lock = None
    if info.is_main:
        run.check_writable()
        lock = recovery.claim(run, resume, cfg.name)
    try:
        return _train(cfg, run, resume, allow_changes, device, info)
    finally:
        if lock is not None:
            lock.release()


def _train(cfg: RunConfig, run: RunDir, resume: bool, allow_changes: bool, device: torch.device, info: D.DistInfo) -> dict[str, Any]:
    s = setup(cfg, run, device, info)
    cfg, tc = s.cfg, s.cfg.train
    start_step, prior_time, prior_examples = restore(s, allow_changes) if resume else (0, 0.0, 0)
    if resume and info.is_main and (cut := run.repair_metrics()):
        print(f"[{cfg.name}] metrics.jsonl: cut {cut} bytes of a torn last line", flush=True)
    history = run.read_metrics(start_step) if resume and info.is_main else []
    tally = Tally.resume(s.task.primary_metric, history, prior_time, prior_examples)
    model = wrap(s, start_step)
    if info.is_main:
        run.write_config(cfg.to_yaml())
        params = count_params(s.model)
        print(f"[{cfg.name}] {cfg.model.name}: {params['total']:,} parameters ({params['trainable']:,} trainable), "
              f"{s.total_steps} steps of {s.examples_per_step} examples, device {device}, precision {s.amp_dtype or 'fp32'}"
              + (f", world {info.world_size}" if info.enabled else ""), flush=True)
    log = RunLog(run, cfg.name, history, start_step, s.total_steps, resume,
                 enabled=info.is_main, progress=tc.progress)

    batches = s.task.batches(index_batches(s.task.num_train, tc.batch_size, tc.seed, start_step * tc.accum_steps, info))
    ckpt_every = tc.checkpoint_every or tc.eval_every
    stop_at = min(s.total_steps, start_step + tc.stop_after_steps) if tc.stop_after_steps else s.total_steps
    model.train()
    reset_peak(device)
    pending: list[tuple[int, torch.Tensor, float]] = []  # (step, loss on device, lr): flushed at sync points
    seg_start, step = time.perf_counter(), start_step
    for step in range(start_step + 1, stop_at + 1):
        loss_sum = torch.zeros((), device=device)
        for micro in range(tc.accum_steps):
            batch = to_device(next(batches), device)
            with D.maybe_no_sync(model, sync=micro == tc.accum_steps - 1), s.autocast():
                loss = s.task.train_loss(model, batch) / tc.accum_steps
            s.scaler.scale(loss).backward()
            loss_sum += loss.detach()
        if cfg.optim.clip > 0:
            s.scaler.unscale_(s.optimizer)
            nn.utils.clip_grad_norm_(s.model.parameters(), cfg.optim.clip)
        s.scaler.step(s.optimizer)
        s.scaler.update()
        s.optimizer.zero_grad(set_to_none=True)
        pending.append((step, loss_sum, s.schedule.get_last_lr()[0]))
        s.schedule.step()
        tally.examples += s.examples_per_step
        log.tick()

        evaluate = step % tc.eval_every == 0 or step == s.total_steps  # a stop is not a validation point
        save = step % ckpt_every == 0 or step == stop_at
        if not (evaluate or save):
            continue
        # ---- sync point: time the training segment, flush losses, validate, checkpoint
        tally.add_time(device, seg_start)
        losses = D.all_reduce_mean(torch.stack([p[1] for p in pending]), info).tolist()
        rows = [{"step": st, "train_loss": v, "lr": lr} for (st, _, lr), v in zip(pending, losses)]
        pending = []
        stop_if_diverged(s, log, rows)
        if evaluate:
            rows.append(validate(s, tally, step))
        log.write(rows, **tally.postfix(losses[-1]))
        if save and info.is_main:
            check_weights(s, step)
            state = snapshot(s, step, tally.train_time, tally.prior_examples + tally.examples)
            save_checkpoint(run, step, s.model, state, checkpoint_meta(s))
        D.barrier(info)
        seg_start = time.perf_counter()

    log.close_progress()
    summary = summarize(s, tally, log, resume) if info.is_main and step >= s.total_steps else None
    log.close()
    D.barrier(info)
    D.shutdown(info)
    return summary or {"name": cfg.name, "stopped_at_step": step, "finished": False}


def stop_if_diverged(s: Setup, log: RunLog, rows: list[dict]) -> None:
    """A non-finite training loss at step b means the weights after step b-1 are damaged: log the rows,
    set aside every checkpoint from step b-1 on, and stop with one line naming the last good one."""
    bad = next((r for r in rows if not math.isfinite(r["train_loss"])), None)
    if bad is None:
        return
    log.write(rows)
    log.close()
    good = recovery.set_aside_diverged(s.run, bad["step"]) if s.info.is_main else None
    where = (f"resume from the last good checkpoint, {good.name}, with --resume --allow-changes" if good is not None
             else "no checkpoint before it survives; start over")
    raise NonFiniteLoss(f"train loss became {bad['train_loss']} at step {bad['step']} (lr {bad['lr']:.3g}); training stopped; "
                        f"lower optim.lr or set optim.clip and {where}")


def check_weights(s: Setup, step: int) -> None:
    """Never checkpoint non-finite weights (a finite loss can precede them by one step)."""
    if not all(bool(torch.isfinite(p).all()) for p in s.model.parameters()):
        raise NonFiniteLoss(f"the weights became non-finite at step {step}; training stopped, the last checkpoint is "
                            f"{getattr(s.run.latest_checkpoint(), 'name', 'none')}; lower optim.lr or set optim.clip")


def load_run(run_dir: str | Path) -> tuple[Task, RunConfig, nn.Module]:
    """(task, cfg, model) of a finished or checkpointed run, weights from its newest verified checkpoint."""
    run = RunDir(run_dir)
    cfg = run_config_from_dict(run.read_config())
    ckpt, notes = run.find_checkpoint()
    if ckpt is None:
        why = f" ({'; '.join(notes)})" if notes else ""
        raise CheckpointError(f"run directory {str(run)!r}: no checkpoint that verifies to load weights from{why}")
    task, cfg2, model = build(cfg)
    load_checkpoint(ckpt, model, {"model": cfg.model.name, "task": cfg.task.name, "run": cfg.name})
    return task, cfg2, model
