"""PACING's own NHWC forward computes what timm's ConvNeXt-V2 modules compute, on the same weights:
logits and every parameter's gradient equal in fp32 (1e-5)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from patchbench import registry
from patchbench.config import ConfigError

TINY = {"vocab_size": 101, "n_positions": 16, "patch": 8, "depths": [1, 2, 2, 1], "dims": [8, 16, 32, 64]}


def _pair(**extra):
    torch.manual_seed(0)
    ours = registry.create_model("pacing", **{**TINY, **extra})
    with torch.no_grad():  # GRN's weight and bias start at zero, which would hide it: make every vector non-trivial
        for p in ours.parameters():
            if p.dim() == 1:
                p.normal_(0.0, 0.3)
    ref = registry.create_model("pacing", **{**TINY, **extra}, forward_impl="timm")
    ref.load_state_dict(ours.state_dict())
    return ours, ref


@pytest.mark.parametrize("extra", [{}, {"readout_channels": 1}, {"layout": "seed", "n_positions": 256, "patch": 4}])
@pytest.mark.parametrize("channels_last", [False, True])
def test_logits_and_grads_equal_timm_blocks(extra, channels_last):
    ours, ref = _pair(**extra)
    if channels_last:  # train.channels_last converts the weights; the NHWC forward must not care
        ours = ours.to(memory_format=torch.channels_last)
        ref = ref.to(memory_format=torch.channels_last)
    n = ours.n_positions
    for T in (n, 5):
        x, y = torch.randint(0, TINY["vocab_size"], (3, T)), torch.randint(0, TINY["vocab_size"], (3,))
        out, ref_out = ours(x), ref(x)
        torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-5)
        F.cross_entropy(out, y).backward()
        F.cross_entropy(ref_out, y).backward()
        grads = dict(ref.named_parameters())
        for name, p in ours.named_parameters():
            if p.grad is None:
                assert grads[name].grad is None, name
                continue
            torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-4, atol=1e-5, msg=name)
        ours.zero_grad(), ref.zero_grad()


def test_drop_path_is_the_same_module():
    """Stochastic depth: the same per-sample mask from the same RNG state in both formulations."""
    ours, ref = _pair(drop_path=0.3)
    x = torch.randint(0, TINY["vocab_size"], (4, 16))
    torch.manual_seed(7)
    a = ours(x)
    torch.manual_seed(7)
    torch.testing.assert_close(a, ref(x), rtol=0, atol=1e-5)


def test_forward_impl_is_validated():
    with pytest.raises(ConfigError, match="forward_impl"):
        registry.create_model("pacing", **TINY, forward_impl="fast")
