"""LSTM baseline for the FPT tasks (the seed's LSTM row): the same input layer, readout and output layer
as FPT, with a stacked LSTM where the transformer body would be.

    x (B, N, F) or ids (B, N) -> input layer (B, N, H) -> LSTM × layers (B, N, H)
      -> the last real token (B, H) | the last k tokens (B, k, H) -> output layer

A unidirectional LSTM never sees the padding after a sequence's last real token, so right-padded
batches need no mask: the readout takes the output at each sequence's own last token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from patchbench.adapters.sequence_tokens import SequenceIO, input_layer, output_layer, read_out
from patchbench.config import num
from patchbench.errors import ConfigError
from patchbench.models.base import count_params
from patchbench.registry import register_model


@dataclass
class LSTMConfig(SequenceIO):
    name: str = "lstm"
    hidden: int = num(768, ge=1)  # GPT-2 small's width
    layers: int = num(3, ge=1)

    def validate(self) -> None:
        self.validate_io()
        if self.readout != "last":
            raise ConfigError(f"model.readout: {self.readout!r}; an LSTM has no CLS token: valid: last")
        for key in ("hidden", "layers"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key}: must be at least 1, got {getattr(self, key)}")


class LSTM(nn.Module):
    masks_padding = True  # causal: padding after the last real token cannot reach it
    n_positions = 1 << 31

    def __init__(self, cfg: LSTMConfig):
        super().__init__()
        cfg.check_filled()
        self.cfg = cfg
        self.embed = input_layer(cfg, cfg.hidden)
        self.lstm = nn.LSTM(cfg.hidden, cfg.hidden, num_layers=cfg.layers, batch_first=True,
                            dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.head = output_layer(cfg, cfg.hidden)
        self.param_counts = count_params(self)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h, _ = self.lstm(self.embed(x))  # (B, N, H)
        return self.head(read_out(h, mask, "last", self.cfg.out_tokens))  # (B, out) | (B, k, out)


@register_model("lstm", config=LSTMConfig, modality="sequence")
def lstm(cfg: LSTMConfig) -> LSTM:
    """LSTM baseline with FPT's input layer, readout and output layer."""
    return LSTM(cfg)
