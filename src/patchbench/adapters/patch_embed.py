"""Image -> patch tokens, in one place: the divisibility check, the token layout and the embedding.

Every patch token is laid out (p1 p2 c): rows of the patch, then columns, then channels. ViT's linear
embedding, its conv embedding (an equivalent strided Conv2d), TowerViT's conv embedding and the
image_patches task's raw tokens (ImagePatchesTask.tokens) all use this layout.
"""

from __future__ import annotations

import torch
from einops.layers.torch import Rearrange
from torch import nn

from patchbench.errors import ConfigError


def check_patch(patch: int, height: int, width: int | None = None, *, key: str = "model.patch", what: str = "") -> None:
    """A patch that does not tile the image would silently drop pixels: refuse it, naming `key` and the
    valid sizes. height 0 = not known yet (the task fills it), nothing to check."""
    width = height if width is None else width
    if not height or (height % patch == 0 and width % patch == 0):
        return
    valid = [p for p in range(1, min(height, width) + 1) if height % p == 0 and width % p == 0]
    where = what or (f"image size {height}" if height == width else f"the {height}x{width} images")
    raise ConfigError(f"{key}: {patch} does not divide {where}; valid patch sizes: {', '.join(map(str, valid))}")


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, N, D) with a Linear over flattened patches or an equivalent strided Conv2d."""

    def __init__(self, kind: str, patch: int, in_chans: int, dim: int):
        super().__init__()
        if kind not in ("linear", "conv"):
            raise ConfigError(f"model.patch_embed: {kind!r}; valid: linear, conv")
        self.kind = kind
        if kind == "linear":
            self.proj = nn.Sequential(
                Rearrange("b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch, p2=patch),  # (B, N, p*p*C)
                nn.Linear(patch * patch * in_chans, dim),
            )
        else:
            self.proj = nn.Sequential(
                nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch),  # (B, D, H/p, W/p)
                Rearrange("b d h w -> b (h w) d"),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)  # (B, N, D)


def linear_weight_from_conv(conv: nn.Conv2d) -> torch.Tensor:
    """The Linear weight (D, p*p*C) that computes what `conv` (D, C, p, p) computes on (p1 p2 c) patches."""
    return conv.weight.permute(0, 2, 3, 1).reshape(conv.out_channels, -1)
