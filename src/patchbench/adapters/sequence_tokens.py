"""Sequences <-> transformer tokens: the trainable ends shared by FPT and its LSTM baseline.

    continuous x (B, N, F) -> [Linear(orth) -> ReLU -> Dropout]* -> Linear(orth, D) -> Dropout   (B, N, D)
    discrete ids (B, N)    -> Embedding(V, D)                                                    (B, N, D)
    readout  h (B, N, D)   -> the last real token, or position 0 (CLS)                           (B, D)
                           -> the last k tokens (per-position outputs, e.g. Bit-Memory)           (B, k, D)
    head     (B, ..., D)   -> [Linear -> ReLU -> Dropout]* -> Linear(D, out)                     (B, ..., out)

Orthogonal init with gain 1.41 and zero bias for the input Linear layers is the seed's
(universal-computation `fpt.py`); the head keeps PyTorch's default init, as there.

The I/O fields (`SequenceIO`) are filled by the task's `prepare()`: a task knows its token width, its
vocabulary, its classes and whether it reads one position or several.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from patchbench.config import bounds, num
from patchbench.errors import ConfigError

INPUT_KINDS = ("auto", "continuous", "discrete")
READOUTS = ("last", "cls")


@dataclass
class SequenceIO:
    """The I/O half of a sequence model's config (the model family adds its own fields)."""

    name: str = ""
    input_kind: str = "auto"  # auto (the task's) | continuous (features per token) | discrete (token ids)
    input_dim: int = num(0, ge=0)  # features per token (continuous); 0 = the task's
    vocab_size: int = num(0, ge=0)  # number of token ids (discrete); 0 = the task's
    output_dim: int = num(0, ge=0)  # values predicted per readout; 0 = the task's
    out_tokens: int = num(0, ge=0)  # 0 = one readout -> (B, output_dim); k = the last k tokens -> (B, k, output_dim) (set by the task)
    readout: str = "last"  # last (the seed's) | cls
    in_layers: list[int] = field(default_factory=list, metadata=bounds(ge=1))  # hidden widths of an input MLP before the body
    out_layers: list[int] = field(default_factory=list, metadata=bounds(ge=1))  # hidden widths of an output MLP after the body
    dropout: float = num(0.1, ge=0, lt=1)
    orth_gain: float = num(1.41, ge=0)  # orthogonal init gain of the input Linear layers; 0 = PyTorch's default init

    def validate_io(self) -> None:
        if self.input_kind not in INPUT_KINDS:
            raise ConfigError(f"model.input_kind: {self.input_kind!r}; valid: {', '.join(INPUT_KINDS)}")
        if self.readout not in READOUTS:
            raise ConfigError(f"model.readout: {self.readout!r}; valid: {', '.join(READOUTS)}")
        for key in ("input_dim", "vocab_size", "output_dim", "out_tokens"):
            if getattr(self, key) < 0:
                raise ConfigError(f"model.{key}: must be 0 (the task's) or positive, got {getattr(self, key)}")
        if any(w < 1 for w in self.in_layers + self.out_layers):
            raise ConfigError(f"model.in_layers/out_layers: widths must be positive, got {self.in_layers} / {self.out_layers}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout: must be in [0, 1), got {self.dropout}")
        if self.out_tokens and self.readout != "last":
            raise ConfigError(f"model.readout: {self.readout} reads one position, but the task reads the last "
                              f"{self.out_tokens} tokens; use readout=last")

    def check_filled(self) -> None:
        """After task.prepare(): the sizes the layers need must be known."""
        if self.input_kind == "auto":
            raise ConfigError(f"model.input_kind: auto needs a task to fill it; set continuous or discrete to build {self.name} alone")
        need = "input_dim" if self.input_kind == "continuous" else "vocab_size"
        for key in (need, "output_dim"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key}: 0 needs a task to fill it; set it to build {self.name} alone")


def input_layer(cfg: SequenceIO, width: int) -> nn.Module:
    """Features (B, N, F) or ids (B, N) -> tokens (B, N, width)."""
    if cfg.input_kind == "discrete":
        return nn.Embedding(cfg.vocab_size, width)
    layers: list[nn.Module] = []
    last = cfg.input_dim
    for size in cfg.in_layers:
        layers += [_orthogonal(nn.Linear(last, size), cfg.orth_gain), nn.ReLU(), nn.Dropout(cfg.dropout)]
        last = size
    layers += [_orthogonal(nn.Linear(last, width), cfg.orth_gain), nn.Dropout(cfg.dropout)]
    return nn.Sequential(*layers)


def _orthogonal(linear: nn.Linear, gain: float) -> nn.Linear:
    if gain:
        nn.init.orthogonal_(linear.weight, gain=gain)
        nn.init.zeros_(linear.bias)
    return linear


def output_layer(cfg: SequenceIO, width: int) -> nn.Module:
    """(B, ..., width) -> (B, ..., output_dim)."""
    layers: list[nn.Module] = []
    last = width
    for size in cfg.out_layers:
        layers += [nn.Linear(last, size), nn.ReLU(), nn.Dropout(cfg.dropout)]
        last = size
    layers.append(nn.Linear(last, cfg.output_dim))
    return nn.Sequential(*layers)


def read_out(h: torch.Tensor, mask: torch.Tensor | None, readout: str, out_tokens: int, offset: int = 0) -> torch.Tensor:
    """Pick the positions the head reads.

    h: (B, offset + N, D), where `offset` tokens (a CLS) were put before the N input tokens;
    mask: (B, N) bool, True on real tokens (right-padded), or None when every token is real.
    """
    if readout == "cls":
        return h[:, 0]  # (B, D)
    if out_tokens:
        if mask is not None:
            raise ValueError("per-position readout (out_tokens) needs fixed-length inputs without a padding mask")
        return h[:, -out_tokens:]  # (B, k, D)
    if mask is None:
        return h[:, -1]  # (B, D)
    last = offset + mask.long().sum(1) - 1  # (B,): index of the last real token
    return h[torch.arange(h.shape[0], device=h.device), last]  # (B, D)
