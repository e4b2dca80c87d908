"""ViT (Dosovitskiy et al.) as the ViT × ConvMixer study built it: one of two patch embeddings, pre-norm
timm blocks, a CLS token, learned positions, a final LayerNorm and a linear head.

    image (B, C, H, W)
      -> patch embedding                      (B, N, D),  N = (H/p) * (W/p)
           linear: Rearrange to (B, N, p*p*C) then Linear(p*p*C, D)
           conv:   Conv2d(C, D, k=p, s=p) then flatten the grid
      -> [CLS] + tokens, + learned positions  (B, N+1, D)
      -> depth × pre-norm Block (timm)        (B, N+1, D)
      -> LayerNorm, CLS token, Linear         (B, num_classes)

The two embeddings hold the same parameters (a p×p×C -> D map); they differ only in the layout of the
weight, so `linear_weight_from_conv` maps one onto the other exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from patchbench.adapters.patch_embed import PatchEmbed, check_patch, linear_weight_from_conv  # noqa: F401 - re-exported
from patchbench.config import num
from patchbench.errors import ConfigError
from patchbench.registry import register_model, register_variant

DEFAULT_IMAGE_SIZE = 192  # the seed's (used when the model is built without a task)
DEFAULT_IN_CHANS = 3


@dataclass
class ViTConfig:
    name: str = "vit"
    num_classes: int = num(0, ge=0)  # 0 = the task's classes (task.prepare); built alone: no head (timm's convention)
    image_size: int = num(0, ge=0)  # 0 = the task's data.image_size (192 when built without a task)
    in_chans: int = num(0, ge=0)  # 0 = the task's image channels (3 when built without a task)
    patch: int = num(16, ge=1)
    patch_embed: str = "linear"  # linear (rearrange + Linear) | conv (Conv2d k=s=patch)
    dim: int = num(512, ge=1)
    depth: int = num(4, ge=1)
    heads: int = num(8, ge=1)
    mlp_ratio: float = num(4.0, gt=0)
    qkv_bias: bool = False  # the seed's qkv Linear had no bias
    drop_rate: float = num(0.0, ge=0, lt=1)
    embed_init_std: float = num(1.0, ge=0)  # CLS/position init std: 1.0 = the seed's torch.randn (timm uses 0.02)

    def validate(self) -> None:
        if self.patch_embed not in ("linear", "conv"):
            raise ConfigError(f"model.patch_embed: {self.patch_embed!r}; valid: linear, conv")
        for key in ("patch", "dim", "depth", "heads"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key}: must be at least 1, got {getattr(self, key)}")
        if self.dim % self.heads:
            raise ConfigError(f"model.dim: {self.dim} is not divisible by model.heads={self.heads}")
        check_patch(self.patch, self.image_size)


class ViT(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        from timm.models.vision_transformer import Block

        self.cfg = cfg
        self.image_size = cfg.image_size or DEFAULT_IMAGE_SIZE
        self.in_chans = cfg.in_chans or DEFAULT_IN_CHANS
        check_patch(cfg.patch, self.image_size)
        self.num_tokens = (self.image_size // cfg.patch) ** 2
        self.num_features = self.head_hidden_size = cfg.dim
        self.num_classes = cfg.num_classes

        self.patch_embed = PatchEmbed(cfg.patch_embed, cfg.patch, self.in_chans, cfg.dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens + 1, cfg.dim))
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        self.blocks = nn.Sequential(*[
            Block(cfg.dim, cfg.heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias, proj_drop=cfg.drop_rate)
            for _ in range(cfg.depth)
        ])
        self.norm = nn.LayerNorm(cfg.dim)
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(cfg.dim, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        nn.init.normal_(self.cls_token, std=cfg.embed_init_std)
        nn.init.normal_(self.pos_embed, std=cfg.embed_init_std)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, N, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, D)
        x = torch.cat([cls, x], dim=1) + self.pos_embed  # (B, N+1, D)
        x = self.blocks(self.pos_drop(x))
        return self.norm(x)  # (B, N+1, D)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x[:, 0])  # (B, D): the CLS token
        return x if pre_logits else self.head(x)  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("vit", config=ViTConfig, modality="image")
def vit(cfg: ViTConfig) -> ViT:
    """ViT: linear or conv patch embedding, pre-norm timm blocks, CLS token, learned positions."""
    return ViT(cfg)


# The ViT x ConvMixer seed's networks (dim 512, depth 4, 8 heads, MLP ratio 4: ViTConfig's defaults)
for _patch in (24, 16):
    for _kind in ("linear", "conv"):
        register_variant(f"vit{_patch}_{_kind}", "vit", patch=_patch, patch_embed=_kind, dim=512, depth=4, heads=8, mlp_ratio=4.0)
