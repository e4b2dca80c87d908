"""Image classifiers: the timm contract over every image family this package registers, the two ViT patch
embeddings as one function, the seeds' sizes (TowerViT 117,514; 64/144 tokens), and refusals."""

from __future__ import annotations

import pytest
import torch
from tiny_configs import IMAGE, names

from patchbench import registry
from patchbench.errors import ConfigError
from patchbench.models.base import count_params
from patchbench.models.vit import linear_weight_from_conv

TINY = IMAGE  # the image entries of the one tiny-config table


def build(name: str, **over):
    torch.manual_seed(0)
    return registry.create_model(name, **{**TINY[name], **over})


def test_every_tiny_config_is_a_registered_image_model():
    for name in TINY:
        assert registry.get_model(name).modality == "image"


@pytest.mark.parametrize("name", names(sorted(TINY)))
def test_forward_shape_and_timm_contract(name):
    model = build(name, num_classes=5)
    x = torch.rand(2, 3, TINY[name]["image_size"], TINY[name]["image_size"])
    model.eval()
    with torch.no_grad():
        y = model(x)
        assert y.shape == (2, 5) and torch.isfinite(y).all()
        assert model.num_classes == 5
        torch.testing.assert_close(model.forward_head(model.forward_features(x)), y)
        model.reset_classifier(3)
        assert model.num_classes == 3 and model(x).shape == (2, 3)
        features = model.forward_head(model.forward_features(x), pre_logits=True)  # (2, width)
        model.reset_classifier(0)  # timm's convention: no classifier, pooled features out
        torch.testing.assert_close(model(x), features)


@pytest.mark.parametrize("name", names(sorted(TINY)))
def test_gradients_reach_exactly_the_trainable_parameters(name):
    model = build(name, num_classes=4)
    params = list(model.parameters())
    frozen = params[0]  # the first parameter, frozen on purpose
    frozen.requires_grad_(False)
    x = torch.rand(3, 3, TINY[name]["image_size"], TINY[name]["image_size"])
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 3]))
    assert torch.isfinite(loss)
    loss.backward()
    assert frozen.grad is None
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"trainable parameters without a gradient: {missing}"
    assert all(torch.isfinite(p.grad).all() for p in params if p.requires_grad)


def test_linear_and_conv_patch_embeddings_compute_the_same_function():
    conv = build("vit", patch_embed="conv", num_classes=3)
    linear = build("vit", patch_embed="linear", num_classes=3)
    assert count_params(conv) == count_params(linear)
    state = {k: v for k, v in conv.state_dict().items() if not k.startswith("patch_embed")}
    missing, _ = linear.load_state_dict(state, strict=False)
    assert sorted(missing) == ["patch_embed.proj.1.bias", "patch_embed.proj.1.weight"]
    with torch.no_grad():
        linear.patch_embed.proj[1].weight.copy_(linear_weight_from_conv(conv.patch_embed.proj[0]))
        linear.patch_embed.proj[1].bias.copy_(conv.patch_embed.proj[0].bias)
    x = torch.rand(2, 3, 32, 32)
    conv.eval(), linear.eval()
    with torch.no_grad():
        torch.testing.assert_close(linear(x), conv(x), rtol=1e-5, atol=1e-5)
        # and the mapping matters: a wrongly ordered weight gives another function
        linear.patch_embed.proj[1].weight.copy_(conv.patch_embed.proj[0].weight.reshape(32, -1))
        assert not torch.allclose(linear(x), conv(x), atol=1e-4)


def test_towervit_has_the_seeds_117514_parameters():
    model = registry.create_model("towervit", num_classes=10, image_size=32, in_chans=3)
    assert count_params(model)["total"] == 117_514
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 10)
    assert model.forward_features(torch.rand(1, 3, 32, 32)).shape == (1, 65, 64)  # 64 patches + CLS


def test_pyramid_vit_widens_and_uses_its_positions():
    model = registry.create_model("vit_pyramid", num_classes=10, image_size=32, in_chans=3)
    assert model.pos_embed.shape == (1, 65, 64)  # one row per token (the seed's table was 65,537 rows, unused)
    widths = [m.out_features for m in model.blocks if isinstance(m, torch.nn.Linear)]
    assert widths == [128, 256]
    assert model.forward_features(torch.rand(1, 3, 32, 32)).shape == (1, 65, 256)
    x = torch.rand(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        before = model(x)
        model.pos_embed.add_(1.0)
        assert not torch.allclose(before, model(x))  # the positional embedding is live


@pytest.mark.parametrize("patch, tokens", [(24, 64), (16, 144)])
def test_vit_token_counts_at_192px(patch, tokens):
    model = registry.create_model("vit", image_size=192, in_chans=3, patch=patch, dim=16, depth=1, heads=2, num_classes=2)
    assert model.num_tokens == tokens
    assert model.forward_features(torch.rand(1, 3, 192, 192)).shape == (1, tokens + 1, 16)


def test_vit_seed_sizes_are_identical_for_both_embeddings():
    counts = {kind: count_params(registry.create_model("vit", image_size=192, in_chans=3, patch=24, patch_embed=kind,
                                                       num_classes=2))["total"]
              for kind in ("linear", "conv")}
    assert counts["linear"] == counts["conv"] == 13_524_482


def test_convmixer_shapes():
    model = build("convmixer", num_classes=5)
    x = torch.rand(2, 3, 32, 32)
    assert model.forward_features(x).shape == (2, 16, 8, 8)  # (B, dim, H/p, W/p): never flattened
    assert model(x).shape == (2, 5)
    blocks = model.blocks[0]
    assert blocks[0].fn[0].groups == 16 and blocks[0].fn[0].kernel_size == (3, 3)  # residual depthwise
    assert blocks[1].kernel_size == (1, 1)  # pointwise


@pytest.mark.parametrize("name", ["vit", "convmixer", "towervit"])
def test_a_patch_that_does_not_divide_the_image_is_refused(name):
    with pytest.raises(ConfigError, match=r"model\.patch: 20 does not divide image size 192"):
        registry.model_config(name, image_size=192, patch=20)


def test_vit_config_refusals():
    with pytest.raises(ConfigError, match=r"model\.patch_embed: 'pixels'; valid: linear, conv"):
        registry.model_config("vit", patch_embed="pixels")
    with pytest.raises(ConfigError, match=r"model\.dim: 30 is not divisible by model\.heads=4"):
        registry.model_config("vit", dim=30, heads=4)
    with pytest.raises(ConfigError, match=r"model\.dims\[1\]"):
        registry.model_config("vit_pyramid", dims=[64, 100, 256])


def test_timm_entry_refuses_unknown_archs_and_missing_checkpoints(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.arch: 'resnet18x' is not a timm model; close matches: resnet18"):
        registry.model_config("timm", arch="resnet18x")
    with pytest.raises(ConfigError, match=r"model\.checkpoint: .*nope\.safetensors' is not a file"):
        registry.model_config("timm", arch="resnet10t", checkpoint=str(tmp_path / "nope.safetensors"))
    with pytest.raises(ConfigError, match=r"model\.arch: .*always resnet18"):
        registry.model_config("resnet18", arch="resnet50")


def test_timm_entry_starts_from_a_local_weights_file(tmp_path):
    from safetensors.torch import save_file

    src = build("timm", num_classes=7)
    path = tmp_path / "w.safetensors"
    save_file(src.state_dict(), str(path))
    same = registry.create_model("timm", arch="resnet10t", num_classes=7, checkpoint=str(path))
    torch.testing.assert_close(same.fc.weight, src.fc.weight)  # a classifier of the same size is kept
    other = registry.create_model("timm", arch="resnet10t", num_classes=3, checkpoint=str(path))
    torch.testing.assert_close(other.conv1[0].weight, src.conv1[0].weight)  # the body is loaded
    assert other.fc.weight.shape == (3, 512)  # a classifier of another size starts fresh


@pytest.mark.parametrize("recipe", ["vit_x_convmixer", "vit_vs_towervit"])
@pytest.mark.parametrize("preset", ["full", "cpu"])
def test_image_recipes_expand_and_their_patches_tile_the_images(recipe, preset):
    from pathlib import Path

    from patchbench.recipe import expand_runs, load_recipe, resolve_recipe
    from patchbench.studies.study import study_config

    path = Path(__file__).resolve().parents[1] / "recipes" / f"{recipe}.yaml"
    merged = resolve_recipe(load_recipe(path), preset, [])
    runs = expand_runs(merged)
    assert study_config(merged).columns
    expected = {"vit_x_convmixer": ["resnet18", "efficientnetv2_b0", "vit24_linear", "vit24_cnn", "convmixer24",
                                    "vit16_linear", "vit16_cnn", "convmixer16", "convmixer16_8"],
                "vit_vs_towervit": ["towervit", "vit_pyramid"]}[recipe]
    assert [r.name for r in runs] == expected
    for run in runs:
        assert run.task.name == "image_classification" and run.data.image_size > 0
        if hasattr(run.model, "patch"):  # the patch must tile the data's image size (validated as the task would)
            values = {k: v for k, v in vars(run.model).items() if k != "name"}
            registry.model_config(run.model.name, **{**values, "image_size": run.data.image_size})
    if recipe == "vit_x_convmixer":
        tokens = {r.name: (r.data.image_size // r.model.patch) ** 2 for r in runs if registry.get_model(r.model.name).base == "vit"}
        assert tokens == {"vit24_linear": 64, "vit24_cnn": 64, "vit16_linear": 144, "vit16_cnn": 144}  # the seed's token counts
    else:
        assert all(r.train.keep_best and r.optim.name == "sgd" for r in runs)
