"""TowerViT and the pyramid ViT of the Visual Transformers study (Notgard/Visual_Transformers), on CIFAR-10.

Both stack post-norm transformer blocks over a 4×4 conv patch embedding; they differ in width:

    image (B, C, 32, 32)
      -> Conv2d(C, w0, k=s=4), flatten           (B, 64, w0)
      -> [CLS] + tokens, + learned positions     (B, 65, w0)
      -> block i at width w_i (post-norm:  x = LN(x + Attn(x)); x = LN(x + MLP(x)))
         then a token-wise Linear w_i -> w_{i+1} when the width changes
      -> LayerNorm, CLS token                    (B, w_last)
      -> Linear(w_last, head_hidden), act        (B, head_hidden)   pre-logits
      -> Linear(head_hidden, num_classes)        (B, num_classes)

towervit:    widths 64,64,64, heads 4, MLP hidden 128, head 64->128->GELU->10   = 117,514 parameters
vit_pyramid: widths 64->128->256, heads 4/8/16, hidden 128/256/512, head 256->512->ReLU->10

The original pyramid ViT built its position table for ((32*32)//4)**2 tokens and never added it; here
it has one row per token (65 × w0) and is added, as in TowerViT. vit_pyramid's add_positions=false
restores the seed's model: no positions at all (the dead table is not built, so not counted).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from patchbench.adapters.patch_embed import PatchEmbed, check_patch
from patchbench.config import bounds, num
from patchbench.errors import ConfigError
from patchbench.registry import register_model

DEFAULT_IMAGE_SIZE = 32  # CIFAR-10 (used when the model is built without a task)
DEFAULT_IN_CHANS = 3


@dataclass
class TowerViTConfig:
    name: str = "towervit"
    num_classes: int = num(0, ge=0)  # 0 = the task's classes; built alone: no final Linear (timm's convention)
    image_size: int = num(0, ge=0)  # 0 = the task's data.image_size (32 when built without a task)
    in_chans: int = num(0, ge=0)  # 0 = the task's image channels (3 when built without a task)
    patch: int = num(4, ge=1)
    dim: int = num(64, ge=1)
    depth: int = num(3, ge=1)
    heads: int = num(4, ge=1)
    hidden: int = num(128, ge=1)  # MLP hidden width of every block
    head_hidden: int = num(128, ge=1)  # the classifier MLP's hidden width (the seed reused `hidden`)
    head_act: str = "gelu"  # gelu | relu
    embed_init_std: float = num(1.0, ge=0)  # CLS/position init std: 1.0 = the seed's torch.randn (timm uses 0.02)

    def validate(self) -> None:
        _check_common(self.patch, self.image_size, self.head_act)
        if self.dim % self.heads:
            raise ConfigError(f"model.dim: {self.dim} is not divisible by model.heads={self.heads}")

    def widths(self) -> tuple[list[int], list[int], list[int]]:
        return [self.dim] * self.depth, [self.heads] * self.depth, [self.hidden] * self.depth


@dataclass
class PyramidViTConfig:
    name: str = "vit_pyramid"
    num_classes: int = num(0, ge=0)
    image_size: int = num(0, ge=0)
    in_chans: int = num(0, ge=0)
    patch: int = num(4, ge=1)
    dims: list[int] = field(default_factory=lambda: [64, 128, 256], metadata=bounds(ge=1))  # one per block; a Linear between widths
    heads: list[int] = field(default_factory=lambda: [4, 8, 16], metadata=bounds(ge=1))
    hidden: list[int] = field(default_factory=lambda: [128, 256, 512], metadata=bounds(ge=1))
    head_hidden: int = num(512, ge=1)
    head_act: str = "relu"
    embed_init_std: float = num(1.0, ge=0)
    add_positions: bool = True  # false = the seed: its position table was never added (no position information)

    def validate(self) -> None:
        _check_common(self.patch, self.image_size, self.head_act)
        if not self.dims or not (len(self.dims) == len(self.heads) == len(self.hidden)):
            raise ConfigError(f"model.dims/heads/hidden: need one entry per block each, got {self.dims}, {self.heads}, {self.hidden}")
        for i, (d, h) in enumerate(zip(self.dims, self.heads)):
            if h < 1 or d % h:
                raise ConfigError(f"model.dims[{i}]: {d} is not divisible by model.heads[{i}]={h}")

    def widths(self) -> tuple[list[int], list[int], list[int]]:
        return list(self.dims), list(self.heads), list(self.hidden)


def _check_common(patch: int, image_size: int, head_act: str) -> None:
    if head_act not in ACTS:
        raise ConfigError(f"model.head_act: {head_act!r}; valid: {', '.join(ACTS)}")
    if patch < 1:
        raise ConfigError(f"model.patch: must be at least 1, got {patch}")
    check_patch(patch, image_size)


ACTS = {"gelu": nn.GELU, "relu": nn.ReLU}


class PostNormBlock(nn.Module):
    """The original Transformer block order: the residual sum is normalised (not the branch input)."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        from timm.layers import Attention, Mlp

        self.attn = Attention(dim, num_heads=heads, qkv_bias=True)
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden_features=hidden, act_layer=nn.GELU)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attn(x))  # (B, T, D)
        return self.norm2(x + self.mlp(x))


class StackedViT(nn.Module):
    """Post-norm blocks whose width may change between blocks (TowerViT: it never does)."""

    def __init__(self, cfg: TowerViTConfig | PyramidViTConfig):
        super().__init__()
        self.cfg = cfg
        dims, heads, hidden = cfg.widths()
        self.image_size = cfg.image_size or DEFAULT_IMAGE_SIZE
        self.in_chans = cfg.in_chans or DEFAULT_IN_CHANS
        check_patch(cfg.patch, self.image_size)
        self.num_tokens = (self.image_size // cfg.patch) ** 2
        self.num_classes = cfg.num_classes

        self.patch_embed = PatchEmbed("conv", cfg.patch, self.in_chans, dims[0])  # (B, N, w0)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dims[0]))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens + 1, dims[0])) if getattr(cfg, "add_positions", True) else None
        layers: list[nn.Module] = []
        for i, (d, h, m) in enumerate(zip(dims, heads, hidden)):
            layers.append(PostNormBlock(d, h, m))
            if i + 1 < len(dims) and dims[i + 1] != d:
                layers.append(nn.Linear(d, dims[i + 1]))  # token-wise widening, (B, T, d) -> (B, T, d')
        self.blocks = nn.Sequential(*layers)
        self.num_features = dims[-1]
        self.head_hidden_size = cfg.head_hidden
        self.norm = nn.LayerNorm(dims[-1])
        self.pre_logits = nn.Sequential(nn.Linear(dims[-1], cfg.head_hidden), ACTS[cfg.head_act]())
        self.head = nn.Linear(cfg.head_hidden, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        nn.init.normal_(self.cls_token, std=cfg.embed_init_std)
        if self.pos_embed is not None:
            nn.init.normal_(self.pos_embed, std=cfg.embed_init_std)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, N, w0)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)  # (B, N+1, w0)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        return self.norm(self.blocks(x))  # (B, N+1, w_last)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre_logits(x[:, 0])  # (B, head_hidden)
        return x if pre_logits else self.head(x)  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("towervit", config=TowerViTConfig, modality="image")
def towervit(cfg: TowerViTConfig) -> StackedViT:
    """TowerViT: constant-width post-norm ViT, conv 4×4 patches, CLS pooling, MLP head (117,514 params)."""
    return StackedViT(cfg)


@register_model("vit_pyramid", config=PyramidViTConfig, modality="image")
def vit_pyramid(cfg: PyramidViTConfig) -> StackedViT:
    """Pyramid ViT: post-norm blocks widening 64->128->256 through token-wise Linears."""
    return StackedViT(cfg)
