"""One contract for every registered model: forward shape, finite outputs, and a gradient on exactly
the trainable parameters. A model registered without an entry in TINY fails here on purpose."""

from __future__ import annotations

import pytest
import torch

from patchbench import registry

B = 2


def _tiny_gpt2_body(tmp_path_factory) -> str:
    from transformers import GPT2Config, GPT2Model

    path = tmp_path_factory.mktemp("body") / "gpt2-tiny"
    GPT2Model(GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64, vocab_size=50)).save_pretrained(path)
    return str(path)


def TINY(tmp_path_factory) -> dict[str, tuple[dict, torch.Tensor, tuple]]:
    """name -> (config overrides, input, expected output shape)."""
    img = torch.randn(B, 3, 32, 32)
    seq = torch.randn(B, 6, 5)
    return {
        "gpt2": ({"vocab_size": 50, "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 16}, torch.randint(0, 50, (B, 16)), (B, 50)),
        "pacing": ({"vocab_size": 50, "n_positions": 16, "patch": 8, "depths": [1, 1, 1, 1], "dims": [8, 16, 16, 16]},
                   torch.randint(0, 50, (B, 12)), (B, 50)),
        "vit": ({"num_classes": 3, "image_size": 32, "in_chans": 3, "patch": 8, "dim": 32, "depth": 2, "heads": 2}, img, (B, 3)),
        "towervit": ({"num_classes": 3, "image_size": 32, "in_chans": 3}, img, (B, 3)),
        "vit_pyramid": ({"num_classes": 3, "image_size": 32, "in_chans": 3}, img, (B, 3)),
        "convmixer": ({"num_classes": 3, "image_size": 32, "in_chans": 3, "dim": 16, "depth": 2, "kernel": 3, "patch": 4}, img, (B, 3)),
        "resnet18": ({"num_classes": 3, "image_size": 32, "in_chans": 3}, img, (B, 3)),
        "efficientnetv2_b0": ({"num_classes": 3, "image_size": 32, "in_chans": 3}, img, (B, 3)),
        "timm": ({"arch": "mobilenetv3_small_050", "num_classes": 3, "image_size": 32, "in_chans": 3}, img, (B, 3)),
        "lstm": ({"input_kind": "continuous", "input_dim": 5, "output_dim": 4, "hidden": 16, "layers": 1}, seq, (B, 4)),
        "fpt": ({"body": _tiny_gpt2_body(tmp_path_factory), "input_kind": "continuous", "input_dim": 5, "output_dim": 4}, seq, (B, 4)),
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return TINY(tmp_path_factory)


def test_every_registered_model_has_a_tiny_config(tiny):
    assert sorted(tiny) == registry.list_models()


@pytest.mark.parametrize("name", registry.list_models())
def test_forward_shape_finite_and_gradients_on_exactly_the_trainable(name, tiny):
    overrides, x, shape = tiny[name]
    torch.manual_seed(0)
    model = registry.create_model(name, **overrides)
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
