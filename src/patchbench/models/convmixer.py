"""ConvMixer (Trockman & Kolter, "Patches Are All You Need?"), built from timm's implementation.

    image (B, C, H, W)
      -> Conv2d(C, dim, k=s=patch), GELU, BatchNorm           (B, dim, H/p, W/p)
      -> depth × [ x + BN(GELU(depthwise k×k conv(x)))        spatial mixing, residual
                   BN(GELU(pointwise 1×1 conv(x))) ]          channel mixing
      -> global average pool, Linear                          (B, num_classes)

Unlike ViT it never flattens the patch grid: a patch embedding followed by convolutions only.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from patchbench.adapters.patch_embed import check_patch
from patchbench.config import num
from patchbench.errors import ConfigError
from patchbench.registry import register_model, register_variant


@dataclass
class ConvMixerConfig:
    name: str = "convmixer"
    num_classes: int = num(0, ge=0)  # 0 = the task's classes; built alone: no head (timm's convention)
    image_size: int = num(0, ge=0)  # 0 = the task's data.image_size; only checked (the network is size-agnostic)
    in_chans: int = num(0, ge=0)  # 0 = the task's image channels (3 when built without a task)
    dim: int = num(512, ge=1)
    depth: int = num(4, ge=1)
    kernel: int = num(9, ge=1)
    patch: int = num(16, ge=1)
    drop_rate: float = num(0.0, ge=0, lt=1)

    def validate(self) -> None:
        for key in ("dim", "depth", "kernel", "patch"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key}: must be at least 1, got {getattr(self, key)}")
        check_patch(self.patch, self.image_size)


@register_model("convmixer", config=ConvMixerConfig, modality="image")
def convmixer(cfg: ConvMixerConfig) -> nn.Module:
    """ConvMixer (timm): patch conv, residual depthwise k×k + pointwise convs, GELU + BatchNorm."""
    from timm.models.convmixer import ConvMixer

    check_patch(cfg.patch, cfg.image_size)
    return ConvMixer(cfg.dim, cfg.depth, kernel_size=cfg.kernel, patch_size=cfg.patch, in_chans=cfg.in_chans or 3,
                     num_classes=cfg.num_classes, drop_rate=cfg.drop_rate)


# The ViT x ConvMixer seed's ConvMixers: 512 wide, kernel 9; 16/8 is its "to match ResNet18" by layer count
register_variant("convmixer24", "convmixer", dim=512, depth=4, kernel=9, patch=24)
register_variant("convmixer16", "convmixer", dim=512, depth=4, kernel=9, patch=16)
register_variant("convmixer16_d8", "convmixer", dim=512, depth=8, kernel=9, patch=16)
