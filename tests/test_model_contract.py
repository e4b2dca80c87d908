"""One contract for every registered model: forward shape, finite outputs, and a gradient on exactly
the trainable parameters, and the Protocol of its modality. The configs: tests/tiny_configs.py."""

from __future__ import annotations

import pytest
import torch
from tiny_configs import names, tiny_configs, tiny_example

from patchbench import registry
from patchbench.models.base import PROTOCOLS


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_configs(tmp_path_factory)


def test_every_registered_model_has_a_tiny_config(tiny):
    assert sorted(tiny) == registry.list_models(variants=False)


@pytest.mark.parametrize("name", names(registry.list_models(variants=False)))
def test_forward_shape_finite_and_gradients_on_exactly_the_trainable(name, tiny):
    torch.manual_seed(0)
    x, shape = tiny_example(name, tiny[name])
    model = registry.create_model(name, **tiny[name])
    assert isinstance(model, PROTOCOLS[registry.get_model(name).modality]), f"{name} does not keep its modality's contract"
    model.train()
    out = model(x)
    assert tuple(out.shape) == shape
    assert torch.isfinite(out).all()
    out.float().pow(2).mean().backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: trainable {pname} got no gradient"
        else:
            assert p.grad is None, f"{name}: frozen {pname} got a gradient"


def test_variants_are_their_family_with_values_the_user_can_still_override():
    assert {"vit24_linear", "vit16_conv", "convmixer24", "convmixer16_d8"} <= set(registry.list_models("*", variants=True))
    cfg = registry.model_config("vit24_conv")
    assert (cfg.name, cfg.patch, cfg.patch_embed, cfg.dim) == ("vit24_conv", 24, "conv", 512)
    assert registry.model_config("convmixer16_d8", depth=2).depth == 2 and registry.get_model("convmixer16_d8").base == "convmixer"
    model = registry.create_model("convmixer24", dim=8, depth=1, num_classes=2, image_size=48)
    assert model(torch.randn(1, 3, 48, 48)).shape == (1, 2)
