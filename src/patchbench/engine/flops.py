"""Model FLOPs of a training or inference step, counted the same way for every model.

torch's FlopCounterMode with three corrections, so that the same function counts the same whatever
kernels run it (and MFU means the same thing for every model):

- the CPU flash-attention kernels SDPA uses are not in torch's table: counted like the CUDA ones;
- a fused attention backward is counted as the 4 matmuls eager attention's backward does, not the 5
  torch counts (the recomputed QKᵀ is not model FLOPs);
- a convolution's backward costs one forward per gradient it needs (input, weight): torch's formula
  ignores `groups` for the weight gradient and so counts a depthwise conv's backward `channels` times
  over (ConvNeXt's 7×7 depthwise convs: ~30× too many FLOPs, MFU far above 100%).

Conventions: 2 FLOPs per multiply-add in matmuls, convolutions and attention; the full T×T attention
even when causal; normalisations, activations and the optimizer step are not counted.

    train_flops_per_sample(model, x, y)       forward + backward of cross_entropy(model(x), y), ÷ batch
    infer_flops_per_sample(model, x)          forward under no_grad, ÷ batch
    count_flops(fn)                           any callable, e.g. a custom loss
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, flop_registry, sdpa_backward_flop_count, sdpa_flop_count

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape) * 4 // 5


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """One forward convolution per needed gradient (input, weight); per group, unlike torch's formula."""
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _without_recompute(formula: Callable[..., int]) -> Callable[..., int]:
    """4/5 of torch's count for a fused attention backward: model FLOPs exclude the recomputed QKᵀ."""
    def count(*args, **kwargs) -> int:
        return formula(*args, **kwargs) * 4 // 5

    count._get_raw = True  # `formula` already unpacks shapes
    return count


def flop_formulas() -> dict:
    """The corrections above, as a FlopCounterMode custom_mapping."""
    aten = torch.ops.aten
    formulas = {
        aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flop,
        aten.convolution_backward: _conv_backward_flop,
    }
    for name in ("_scaled_dot_product_flash_attention_backward", "_scaled_dot_product_efficient_attention_backward",
                 "_scaled_dot_product_cudnn_attention_backward", "_flash_attention_backward", "_efficient_attention_backward"):
        op = getattr(aten, name, None)
        if op is not None and op in flop_registry:
            formulas[op] = _without_recompute(flop_registry[op])
    return formulas


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of everything `fn` runs (forward and, if it calls it, backward), by the rules above."""
    with FlopCounterMode(display=False, custom_mapping=flop_formulas()) as counter:
        fn()
    return counter.get_total_flops()


def last_token_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the model's (B, K) output against (B,) targets, in fp32."""
    return F.cross_entropy(model(x).float(), y)


def train_flops_per_sample(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss_fn: LossFn = last_token_loss,
                           autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext) -> float:
    """Forward + backward FLOPs of `loss_fn(model, x, y)` per sample (x's first dimension); the model's
    gradients and train/eval mode are left as they were found (gradients cleared)."""
    was = model.training
    model.train()

    def step() -> None:
        with autocast():
            loss = loss_fn(model, x, y)
        loss.backward()

    try:
        return count_flops(step) / x.shape[0]
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was)


def infer_flops_per_sample(model: nn.Module, x: torch.Tensor, *,
                           autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext) -> float:
    """Forward FLOPs per sample in eval mode, without gradients."""
    was = model.training
    model.eval()

    def forward() -> None:
        with torch.no_grad(), autocast():
            model(x)

    try:
        return count_flops(forward) / x.shape[0]
    finally:
        model.train(was)
