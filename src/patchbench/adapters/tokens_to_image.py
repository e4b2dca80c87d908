"""PACING's adapter: one embedding per token -> one C×p×p patch per token -> one image.

Token k (after reversal) lands in grid cell (k // grid, k % grid), i.e. pixel block
rows [r*p, (r+1)*p), cols [c*p, (c+1)*p). Assembly is one reshape/permute, no Python loop.

Layouts:
  all   every token is placed; grid = ceil(sqrt(n_positions)) (1024 tokens -> 32×32 -> 512×512 px).
  seed  the original code's layout: a fixed 16×16 grid holding only the first 256 patches
        (the 256 most recent tokens after reversal); kept for faithful replication.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def grid_size(n_positions: int, layout: str) -> int:
    if layout == "all":
        return math.isqrt(n_positions - 1) + 1 if n_positions > 1 else 1
    if layout == "seed":
        return 16
    raise ValueError(f"layout {layout!r}: valid layouts are 'all' and 'seed'")


class TokensToImage(nn.Module):
    """(B, N, C*p*p) embeddings -> (B, C, grid*p, grid*p) image."""

    def __init__(self, *, n_positions: int, channels: int, patch: int, layout: str = "all"):
        super().__init__()
        self.channels, self.patch, self.layout = channels, patch, layout
        self.grid = grid_size(n_positions, layout)
        self.n_positions = n_positions
        self.n_cells = self.grid * self.grid
        if layout == "seed" and n_positions < self.n_cells:
            raise ValueError(f"layout 'seed' places {self.n_cells} patches but n_positions is {n_positions}")

    @property
    def image_size(self) -> int:
        return self.grid * self.patch

    def forward(self, emb: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        B, N, D = emb.shape
        C, p, g = self.channels, self.patch, self.grid
        if D != C * p * p:
            raise ValueError(f"embedding width {D} != channels*patch*patch = {C}*{p}*{p}")
        if N >= self.n_cells:
            x = emb[:, : self.n_cells]  # seed layout: only the first grid*grid patches
        else:  # all layout with a non-square count: empty cells are zero
            x = torch.cat([emb, emb.new_zeros(B, self.n_cells - N, D)], dim=1)
        x = x.view(B, g, g, C, p, p)  # (B, row, col, C, py, px)
        if channels_last:  # same values, NHWC storage: one copy, no later layout conversion
            x = x.permute(0, 1, 4, 2, 5, 3).reshape(B, g * p, g * p, C)  # (B, H, W, C)
            return x.permute(0, 3, 1, 2)  # (B, C, H, W) view in channels_last
        x = x.permute(0, 3, 1, 4, 2, 5)  # (B, C, row, py, col, px)
        return x.reshape(B, C, g * p, g * p)  # (B, C, H, W)
