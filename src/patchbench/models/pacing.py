"""PACING: Patched bAsed ConvolutIoNal Generator (Aveygo/WordsAreWorth16x16Pixels), on timm's ConvNeXt-V2.

    ids (B, T)
      -> reversed (most recent token first), right-padded to n_positions with pad_id
      -> wte(ids) + wpe(pos)                        (B, N, D),  D = 3 * patch * patch
      -> one 3×p×p patch per token, one image       (B, 3, grid*p, grid*p)
      -> ConvNeXt-V2: stem 4×4/4, 4 stages          (B, C4, h, w)
      -> flatten positions (B, C4, P); when P does not divide D (long contexts), average-pool them
         to P' = the largest divisor of D not above P (P' = P for the seed's sizes)
      -> ConvTranspose1d k=s=D/P': the map back to D per output channel
                                                    (B, n_readout, D)
      -> last readout channel, tied unembedding     (B, V)

The seed's readout has n_positions output channels of which only the last is decoded: the others are
real parameters that never get a gradient. `readout_channels` keeps that faithful count (default) or
trims it (1 = only the live channel); either way only the live channel is computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from patchbench.adapters.tokens_to_image import TokensToImage, grid_size
from patchbench.config import bounds, num
from patchbench.errors import ConfigError
from patchbench.registry import register_model


@dataclass
class PacingConfig:
    name: str = "pacing"
    vocab_size: int = num(50257, ge=0)  # 0 = take the tokenizer's size
    n_positions: int = num(1024, ge=1)
    patch: int = num(16, ge=1)  # n_embd = 3 * patch * patch
    layout: str = "all"  # all (every token placed, 32×32 grid for 1024) | seed (16×16 grid, first 256)
    depths: list[int] = field(default_factory=lambda: [3, 3, 24, 3], metadata=bounds(ge=1))
    dims: list[int] = field(default_factory=lambda: [128, 256, 512, 1024], metadata=bounds(ge=1))
    readout_channels: int = num(0, ge=0)  # 0 = n_positions (the seed's ConvTranspose1d width)
    drop_path: float = num(0.0, ge=0, lt=1)
    pad_id: int = num(-1, ge=-1)  # -1 = vocab_size - 1 (GPT-2's <|endoftext|> = 50256)
    embed_init_std: float = num(0.02, ge=0)  # token/position embedding init (GPT-2's); 0 = PyTorch's N(0, 1), as the seed
    forward_impl: str = "patchbench"  # patchbench (one NHWC layout end to end, fused GRN) | timm (timm's modules)

    @property
    def n_embd(self) -> int:
        return 3 * self.patch * self.patch

    def validate(self) -> None:
        if self.forward_impl not in ("patchbench", "timm"):
            raise ConfigError(f"model.forward_impl: {self.forward_impl!r}; valid: patchbench, timm")
        if self.layout not in ("all", "seed"):
            raise ConfigError(f"model.layout: {self.layout!r}; valid layouts: all, seed")
        if len(self.depths) != 4 or len(self.dims) != 4:
            raise ConfigError(f"model.depths/model.dims: need 4 stages each, got {self.depths} and {self.dims}")
        if self.layout == "seed" and self.n_positions < 256:
            raise ConfigError(f"model.layout: 'seed' places 256 tokens but model.n_positions is {self.n_positions}")
        side = grid_size(self.n_positions, self.layout) * self.patch
        if side % 32:
            raise ConfigError(f"model.patch: image side {side}px is not divisible by the network stride 32; "
                              "use a patch or n_positions that gives a multiple of 32")


def readout_positions(width: int, positions: int) -> int:
    """The largest divisor of the embedding width not above the number of feature positions."""
    return max(d for d in range(1, min(width, positions) + 1) if width % d == 0)


class Pacing(nn.Module):
    causal_lm = False

    def __init__(self, cfg: PacingConfig):
        super().__init__()
        from timm.layers import LayerNorm2d
        from timm.models.convnext import ConvNeXtStage

        self.cfg = cfg
        self.vocab_size, self.n_positions = cfg.vocab_size, cfg.n_positions
        self.pad_id = cfg.pad_id if cfg.pad_id >= 0 else cfg.vocab_size - 1
        D = cfg.n_embd
        self.wte = nn.Embedding(cfg.vocab_size, D)
        self.wpe = nn.Embedding(cfg.n_positions, D)
        self.to_image = TokensToImage(n_positions=cfg.n_positions, channels=3, patch=cfg.patch, layout=cfg.layout)

        dims, depths = cfg.dims, cfg.depths
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0], eps=1e-6))
        n = sum(depths)
        rates = [cfg.drop_path * i / max(n - 1, 1) for i in range(n)]  # stochastic depth, linear in depth
        stages, start, prev = [], 0, dims[0]
        for i in range(4):  # ConvNeXt-V2 blocks: 7×7 depthwise, LayerNorm, 4× MLP with GRN, no layer scale
            stages.append(ConvNeXtStage(
                prev, dims[i], stride=1 if i == 0 else 2, depth=depths[i],
                drop_path_rates=rates[start:start + depths[i]], ls_init_value=None, use_grn=True,
                norm_layer=LayerNorm2d,
            ))
            start += depths[i]
            prev = dims[i]
        self.stages = nn.Sequential(*stages)

        side = self.to_image.image_size // 32
        self.n_cells = side * side  # feature positions after the stride-32 network
        self.n_readout_in = readout_positions(D, self.n_cells)
        k = D // self.n_readout_in
        readout = cfg.readout_channels or cfg.n_positions
        self.readout = nn.ConvTranspose1d(dims[-1], readout, kernel_size=k, stride=k)  # (B, C4, P) -> (B, R, D)
        self.apply(self._init_weights)
        if cfg.embed_init_std > 0:
            nn.init.normal_(self.wte.weight, std=cfg.embed_init_std)
            nn.init.normal_(self.wpe.weight, std=cfg.embed_init_std)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        T = ids.shape[1]
        if T > self.n_positions:
            ids = ids[:, -self.n_positions:]  # keep the most recent tokens
            T = self.n_positions
        ids = ids.flip(1)  # most recent token first
        if T < self.n_positions:
            ids = nn.functional.pad(ids, (0, self.n_positions - T), value=self.pad_id)
        pos = torch.arange(self.n_positions, device=ids.device)
        return self.wte(ids) + self.wpe(pos)  # (B, N, D)

    def forward_features(self, ids: torch.Tensor) -> torch.Tensor:
        if self.cfg.forward_impl == "patchbench":
            return self._features_nhwc(ids)
        nhwc = self.stem[0].weight.is_contiguous(memory_format=torch.channels_last)  # train.channels_last
        x = self.to_image(self.embed(ids), channels_last=nhwc)  # (B, 3, H, W)
        x = self.stem(x)  # (B, C1, H/4, W/4)
        return self.stages(x)  # (B, C4, H/32, W/32)

    # ----------------------------------------------------------------------------------------------
    # patchbench's forward over timm's parameters: activations stay (B, H, W, C) from the image to the
    # readout. Convolutions see the same storage as a channels_last (B, C, H, W) view, so no block
    # converts layouts (timm's block permutes NCHW <-> NHWC around its LayerNorm and MLP, and its
    # LayerNorm2d does so again in the stem and every downsample). GRN is one fused multiply-add.

    @staticmethod
    def _conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        """(B, H, W, C) -> (B, H', W', C'): the convolution on the channels_last view of the same storage."""
        y = nn.functional.conv2d(x.permute(0, 3, 1, 2), conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        return y.permute(0, 2, 3, 1)

    @staticmethod
    def _norm(x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        return nn.functional.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)

    def _block(self, x: torch.Tensor, blk: nn.Module) -> torch.Tensor:
        """ConvNeXt-V2 block on (B, H, W, C): x + fc2(GRN(gelu(fc1(LN(dwconv(x))))))."""
        mlp = blk.mlp
        y = self._norm(self._conv(x, blk.conv_dw), blk.norm)  # (B, H, W, C)
        y = mlp.act(nn.functional.linear(y, mlp.fc1.weight, mlp.fc1.bias))  # (B, H, W, 4C)
        grn = mlp.grn  # x + w * (x * n) + b  =  x * (1 + w * n) + b,  n = |x|_HW / mean_C |x|_HW
        g = (y * y).sum(dim=(1, 2), keepdim=True).sqrt()  # (B, 1, 1, 4C): |y| over H, W (vector_norm is slow here)
        n = g / (g.mean(dim=-1, keepdim=True) + grn.eps)
        y = torch.addcmul(grn.bias, y, torch.addcmul(torch.ones_like(n), grn.weight, n))  # (B, H, W, 4C)
        y = nn.functional.linear(y, mlp.fc2.weight, mlp.fc2.bias)  # (B, H, W, C)
        return x + blk.drop_path(y)

    def _features_nhwc(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.to_image(self.embed(ids), channels_last=True).permute(0, 2, 3, 1)  # (B, H, W, 3), contiguous
        x = self._norm(self._conv(x, self.stem[0]), self.stem[1])  # (B, H/4, W/4, C1)
        for stage in self.stages:
            if not isinstance(stage.downsample, nn.Identity):
                norm, conv = stage.downsample
                x = self._conv(self._norm(x, norm), conv)  # (B, H/2, W/2, C')
            for blk in stage.blocks:
                x = self._block(x, blk)
        return x.permute(0, 3, 1, 2)  # (B, C4, H/32, W/32), channels_last storage

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        x = feats.flatten(2)  # (B, C4, P)
        if self.n_readout_in != self.n_cells:
            x = nn.functional.adaptive_avg_pool1d(x, self.n_readout_in)  # (B, C4, P')
        # Only the last readout channel is decoded (as in the seed): compute just that one.
        w = self.readout.weight[:, -1:, :]  # (C4, 1, k)
        b = self.readout.bias[-1:]
        x = nn.functional.conv_transpose1d(x, w, b, stride=self.readout.stride)  # (B, 1, D)
        return x[:, 0] @ self.wte.weight.t()  # (B, V): tied unembedding

    def forward(self, ids: torch.Tensor, all_positions: bool = False) -> torch.Tensor:
        if all_positions:
            raise ValueError("PACING predicts only the token after the window; use task.objective=last_token")
        return self.forward_head(self.forward_features(ids))


@register_model("pacing", config=PacingConfig, modality="tokens")
def pacing(cfg: PacingConfig) -> Pacing:
    """PACING: tokens as 3×p×p patches of one image, ConvNeXt-V2 (timm), tied unembedding."""
    return Pacing(cfg)
