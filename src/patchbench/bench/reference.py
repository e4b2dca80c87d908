"""`--reference`: the implementation a user would otherwise pick, measured on the same inputs.

    gpt2               transformers GPT2LMHeadModel, eager attention, fp32, full (B, T, V) logits and the
                       loss on the last position (what the task trains); same weights as patchbench's
                       and, second, NanoGPTStyle below: the minimal GPT-2 step the field measures against
                       (fused QKV Linear, SDPA is_causal, tied head on the last position), written here
                       from GPT-2's definition over the same weights
    pacing             SeedStylePacing below: the seed's forward (Aveygo/WordsAreWorth16x16Pixels,
                       models/pacing_model.py) re-implemented over patchbench's Pacing weights
    vit*               timm VisionTransformer with the same width, depth, heads, patch and image size
    convmixer*         timm ConvMixer with the same dim, depth, kernel and patch
    resnet18           timm resnet18
    efficientnetv2_b0  timm tf_efficientnetv2_b0

References always run the way their users run them: fp32, eager, no channels_last, torch's default
(foreach, unfused) AdamW. They are for measurement only; nothing trains with them.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------------------------------
# PACING as the seed wrote it


class SeedStylePacing(nn.Module):
    """The seed's PACING forward, computing patchbench's function with patchbench's weights.

    What the seed did differently (and what this costs): the image is assembled patch by patch in a
    Python double loop into a zero tensor; channels-first LayerNorms are written out as mean/var ops;
    GRN is `torch.norm` + separate ops; and the readout is the full ConvTranspose1d over every one of
    n_positions output channels followed by the tied (B, n_positions, V) unembedding, of which only
    the last channel is kept. When patchbench's config trims the readout (readout_channels < n_positions)
    the dead channels are re-created here with random weights: they never reach the output, so the
    function is unchanged and the cost is the seed's.
    """

    def __init__(self, pacing: nn.Module):
        super().__init__()
        self.net = pacing
        C4, R, k = pacing.readout.weight.shape
        N = pacing.n_positions
        weight = torch.empty(C4, N, k)
        nn.init.trunc_normal_(weight, std=0.02)
        bias = torch.zeros(N)
        weight[:, -R:] = pacing.readout.weight.detach()
        bias[-R:] = pacing.readout.bias.detach()
        self.pre_head = nn.ConvTranspose1d(C4, N, kernel_size=k, stride=k)  # the seed's full readout
        with torch.no_grad():
            self.pre_head.weight.copy_(weight)
            self.pre_head.bias.copy_(bias)

    def build_image(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, N, 3, p, p) -> (B, 3, g*p, g*p), one patch at a time (the seed's loop)."""
        B, N, C, p, _ = patches.shape
        g = self.net.to_image.grid
        image = torch.zeros((B, C, g * p, g * p), device=patches.device, dtype=patches.dtype)
        for i in range(g):
            for j in range(g):
                if i * g + j < N:
                    image[:, :, i * p:(i + 1) * p, j * p:(j + 1) * p] = patches[:, i * g + j, :, :, :]
        return image

    @staticmethod
    def layer_norm_channels_first(x: torch.Tensor, ln: nn.Module) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + ln.eps)
        return ln.weight[:, None, None] * x + ln.bias[:, None, None]

    @staticmethod
    def block(x: torch.Tensor, blk: nn.Module) -> torch.Tensor:
        """ConvNeXt-V2 block as the seed wrote it, on timm's ConvNeXtBlock parameters."""
        shortcut = x
        x = blk.conv_dw(x)
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        x = F.layer_norm(x, blk.norm.normalized_shape, blk.norm.weight, blk.norm.bias, blk.norm.eps)
        x = F.gelu(F.linear(x, blk.mlp.fc1.weight, blk.mlp.fc1.bias))
        grn = blk.mlp.grn
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        x = grn.weight.view(1, 1, 1, -1) * (x * nx) + grn.bias.view(1, 1, 1, -1) + x
        x = F.linear(x, blk.mlp.fc2.weight, blk.mlp.fc2.bias)
        x = x.permute(0, 3, 1, 2)  # (B, C, H, W)
        return shortcut + blk.drop_path(x)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        net = self.net
        N = net.n_positions
        ids = torch.flip(ids[:, -N:], [1])  # most recent token first
        if ids.shape[1] < N:
            ids = F.pad(ids, (0, N - ids.shape[1]), value=net.pad_id)
        position_ids = torch.arange(0, N, dtype=torch.long, device=ids.device).unsqueeze(0).expand_as(ids)
        x = net.wte(ids) + net.wpe(position_ids)  # (B, N, D)
        p = net.to_image.patch
        x = torch.reshape(x, (x.shape[0], x.shape[1], 3, p, p))  # (B, N, 3, p, p)
        x = self.build_image(x)  # (B, 3, H, W)
        x = net.stem[0](x)
        x = self.layer_norm_channels_first(x, net.stem[1])
        for stage in net.stages:
            if not isinstance(stage.downsample, nn.Identity):
                x = self.layer_norm_channels_first(x, stage.downsample[0])
                x = stage.downsample[1](x)
            for blk in stage.blocks:
                x = self.block(x, blk)
        x = x.view(x.shape[0], x.shape[1], -1)  # (B, C4, P)
        x = self.pre_head(x)  # (B, N, D): every readout channel
        x = F.linear(x, net.wte.weight)  # (B, N, V): the tied head over every channel
        return x[:, -1]


# --------------------------------------------------------------------------------------------------
# GPT-2 as transformers ships it


class HFGPT2Reference(nn.Module):
    """GPT2LMHeadModel in its default eager fp32 form: full logits, the last position scored."""

    def __init__(self, ours: nn.Module):
        super().__init__()
        from transformers import GPT2LMHeadModel

        config = copy.deepcopy(ours.lm.config)
        config._attn_implementation = "eager"
        self.lm = GPT2LMHeadModel(config)
        self.lm.load_state_dict(ours.lm.state_dict())

    def forward(self, ids: torch.Tensor, all_positions: bool = False) -> torch.Tensor:
        logits = self.lm(input_ids=ids).logits  # (B, T, V) computed
        return logits if all_positions else logits[:, -1]  # (B, V) scored under last_token


class NanoGPTStyle(nn.Module):
    """GPT-2 as a minimal training script writes it: nn.Linear layers (QKV fused), pre-LayerNorm blocks,
    SDPA with is_causal, tanh GELU, the tied unembedding applied to the last position only; every block
    runs on every position. Built from patchbench's GPT-2 weights (transformers' Conv1D stores W as
    (in, out); a Linear stores Wᵀ), with the same dropout, so it computes the same function."""

    def __init__(self, ours: nn.Module):
        super().__init__()
        body, cfg = ours.lm.transformer, ours.lm.config
        C, self.n_head, self.p = cfg.n_embd, cfg.n_head, cfg.resid_pdrop
        self.wte, self.wpe = copy.deepcopy(body.wte), copy.deepcopy(body.wpe)
        self.blocks = nn.ModuleList()
        for h in body.h:
            blk = nn.ModuleDict({
                "ln1": nn.LayerNorm(C, eps=cfg.layer_norm_epsilon), "qkv": nn.Linear(C, 3 * C), "proj": nn.Linear(C, C),
                "ln2": nn.LayerNorm(C, eps=cfg.layer_norm_epsilon), "fc": nn.Linear(C, 4 * C), "fc2": nn.Linear(4 * C, C),
            })
            with torch.no_grad():
                for ours_ln, ln in ((h.ln_1, blk["ln1"]), (h.ln_2, blk["ln2"])):
                    ln.weight.copy_(ours_ln.weight)
                    ln.bias.copy_(ours_ln.bias)
                pairs = ((h.attn.c_attn, blk["qkv"]), (h.attn.c_proj, blk["proj"]), (h.mlp.c_fc, blk["fc"]), (h.mlp.c_proj, blk["fc2"]))
                for conv1d, lin in pairs:
                    lin.weight.copy_(conv1d.weight.t())
                    lin.bias.copy_(conv1d.bias)
            self.blocks.append(blk)
        self.ln_f = copy.deepcopy(body.ln_f)

    def forward(self, ids: torch.Tensor, all_positions: bool = False) -> torch.Tensor:
        B, T = ids.shape
        p = self.p if self.training else 0.0
        x = F.dropout(self.wte(ids) + self.wpe(torch.arange(T, device=ids.device)), p, self.training)  # (B, T, C)
        C, nh = x.shape[-1], self.n_head
        for blk in self.blocks:
            q, k, v = blk["qkv"](blk["ln1"](x)).split(C, dim=2)  # 3 × (B, T, C)
            q, k, v = (t.view(B, T, nh, C // nh).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True).transpose(1, 2).reshape(B, T, C)
            x = x + F.dropout(blk["proj"](y), p, self.training)
            x = x + F.dropout(blk["fc2"](F.gelu(blk["fc"](blk["ln2"](x)), approximate="tanh")), p, self.training)
        x = x if all_positions else x[:, -1]  # the head on the last position (last_token) or every one
        return F.linear(self.ln_f(x), self.wte.weight)  # (B, V) or (B, T, V)


# --------------------------------------------------------------------------------------------------
# timm image models


def _field(cfg: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        value = getattr(cfg, n, None)
        if value not in (None, 0, ""):
            return value
    if default is None:
        raise LookupError(f"config has none of {', '.join(names)}")
    return default


def _timm_vit(cfg: Any) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=cfg.image_size, patch_size=_field(cfg, "patch", "patch_size"), in_chans=_field(cfg, "in_chans", default=3),
        num_classes=cfg.num_classes, embed_dim=_field(cfg, "dim", "embed_dim", "width"), depth=_field(cfg, "depth"),
        num_heads=_field(cfg, "heads", "num_heads", "n_head"), mlp_ratio=float(_field(cfg, "mlp_ratio", default=4.0)),
        qkv_bias=bool(getattr(cfg, "qkv_bias", True)), class_token=True, global_pool="token",
    )


def _timm_convmixer(cfg: Any) -> nn.Module:
    from timm.models.convmixer import ConvMixer

    return ConvMixer(dim=_field(cfg, "dim"), depth=_field(cfg, "depth"), kernel_size=_field(cfg, "kernel_size", "kernel", default=9),
                     patch_size=_field(cfg, "patch", "patch_size"), in_chans=_field(cfg, "in_chans", default=3),
                     num_classes=cfg.num_classes)


def _timm_named(timm_name: str):
    def build(cfg: Any) -> nn.Module:
        import timm

        return timm.create_model(timm_name, pretrained=False, num_classes=cfg.num_classes, in_chans=_field(cfg, "in_chans", default=3))

    return build


def _image_reference(name: str):
    """(builder, description) of the timm model matching a patchbench image family, or None."""
    if name.startswith("vit") and not any(w in name for w in ("tower", "pyramid")):
        return _timm_vit, "timm VisionTransformer (same dims, fp32)"
    if name.startswith("convmixer"):
        return _timm_convmixer, "timm ConvMixer (fp32)"
    if name == "resnet18":
        return _timm_named("resnet18"), "timm resnet18 (fp32)"
    if name.startswith("efficientnetv2"):
        return _timm_named("tf_efficientnetv2_b0"), "timm tf_efficientnetv2_b0 (fp32)"
    return None


def n_references(name: str) -> int:
    return 2 if name == "gpt2" else 1


def build_references(name: str, ours: nn.Module, cfg: Any, modality: str) -> list[tuple[nn.Module | None, str, bool]]:
    """Every reference for a model: GPT-2 has two (transformers' eager model, the nanoGPT-style step)."""
    if name == "gpt2":
        return [build_reference(name, ours, cfg, modality),
                (NanoGPTStyle(ours), "nanoGPT-style GPT-2 (fused QKV, SDPA is_causal, last-position head, fp32)", True)]
    return [build_reference(name, ours, cfg, modality)]


def build_reference(name: str, ours: nn.Module, cfg: Any, modality: str) -> tuple[nn.Module | None, str, bool]:
    """(reference module, description, whether it holds our weights) for a patchbench model;
    (None, why, False) when there is none. Same weights = same function: the caller checks outputs."""
    if name == "gpt2" or type(ours).__name__ == "GPT2":
        return HFGPT2Reference(ours), "transformers GPT2LMHeadModel (eager attention, fp32, full logits)", True
    if name == "pacing" or type(ours).__name__ == "Pacing":
        return SeedStylePacing(ours), "seed-style PACING (Python-loop image, full readout, fp32)", True
    if modality == "image":
        found = _image_reference(name)
        if found is None:
            return None, f"no off-the-shelf implementation of {name!r} to compare with", False
        builder, desc = found
        try:
            ref = builder(cfg)
        except LookupError as e:
            return None, f"cannot map {name!r} config to {desc}: {e}", False
        try:  # the same architecture (patchbench wraps timm's): load our weights, compare outputs
            ref.load_state_dict(ours.state_dict())
            return ref, desc, True
        except RuntimeError:
            return ref, desc, False
    return None, f"no reference for {name!r}", False
