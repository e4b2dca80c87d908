"""Optimizers and learning-rate schedules from OptimConfig."""

from __future__ import annotations

import math

import torch
from torch import nn

from patchbench.config import OptimConfig
from patchbench.errors import ConfigError


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("model: no trainable parameters (everything is frozen)")
    fused = {"auto": device.type in ("cuda", "cpu"), "on": True, "off": False}.get(cfg.fused)  # torch fuses AdamW on both
    if fused is None:
        raise ConfigError(f"optim.fused: {cfg.fused!r}; valid: auto, on, off")
    if cfg.name in ("adamw", "adam"):
        if len(cfg.betas) != 2:
            raise ConfigError(f"optim.betas: expected two numbers, got {cfg.betas}")
        cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
        return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay,
                   fused=fused or None)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ConfigError(f"optim.name: {cfg.name!r}; valid optimizers: adamw, adam, sgd")


def build_schedule(opt: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    """constant (optionally with linear warm-up) or warm-up + cosine decay to min_lr."""
    if cfg.schedule not in ("constant", "cosine"):
        raise ConfigError(f"optim.schedule: {cfg.schedule!r}; valid schedules: constant, cosine")
    floor = cfg.min_lr / cfg.lr if cfg.lr else 0.0

    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        span = max(total_steps - cfg.warmup_steps, 1)
        t = min((step - cfg.warmup_steps) / span, 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)
