"""The one table of tiny configs every model contract test runs on. A model registered without an entry
here fails test_model_contract on purpose."""

from __future__ import annotations

import torch

from patchbench import registry

B = 2

# image classifiers, without num_classes (each test picks its own)
IMAGE = {
    "vit": {"image_size": 32, "in_chans": 3, "patch": 8, "dim": 32, "depth": 2, "heads": 4},
    "towervit": {"image_size": 16, "in_chans": 3, "dim": 16, "depth": 2, "heads": 2, "hidden": 32, "head_hidden": 32},
    "vit_pyramid": {"image_size": 16, "in_chans": 3, "dims": [16, 32], "heads": [2, 4], "hidden": [32, 64], "head_hidden": 32},
    "convmixer": {"image_size": 32, "in_chans": 3, "dim": 16, "depth": 2, "kernel": 3, "patch": 4},
    "resnet18": {"image_size": 32, "in_chans": 3},
    "efficientnetv2_b0": {"image_size": 32, "in_chans": 3},
    "timm": {"arch": "resnet10t", "image_size": 32, "in_chans": 3},
}


SLOW = {"efficientnetv2_b0", "resnet18"}  # seconds per test on CPU: run with the slow tests


def names(all_names) -> list:
    """Parametrize over model names, the slow ones marked slow."""
    import pytest

    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in all_names]


def tiny_gpt2_body(tmp_path_factory) -> str:
    from transformers import GPT2Config, GPT2Model

    path = tmp_path_factory.mktemp("body") / "gpt2-tiny"
    GPT2Model(GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64, vocab_size=50)).save_pretrained(path)
    return str(path)


def tiny_configs(tmp_path_factory) -> dict[str, dict]:
    """name -> config overrides of a model small enough for a CPU test."""
    return {
        "gpt2": {"vocab_size": 50, "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 16},
        "pacing": {"vocab_size": 50, "n_positions": 16, "patch": 8, "depths": [1, 1, 1, 1], "dims": [8, 16, 16, 16]},
        **{name: {**cfg, "num_classes": 3} for name, cfg in IMAGE.items()},
        "lstm": {"input_kind": "continuous", "input_dim": 5, "output_dim": 4, "hidden": 16, "layers": 1},
        "fpt": {"body": tiny_gpt2_body(tmp_path_factory), "input_kind": "continuous", "input_dim": 5, "output_dim": 4},
    }


def tiny_example(name: str, cfg: dict) -> tuple[torch.Tensor, tuple[int, ...]]:
    """An input batch for the model and the output shape it must give, by the model's modality."""
    modality = registry.get_model(name).modality
    if modality == "tokens":
        return torch.randint(0, cfg["vocab_size"], (B, 12)), (B, cfg["vocab_size"])
    if modality == "image":
        return torch.randn(B, cfg["in_chans"], cfg["image_size"], cfg["image_size"]), (B, cfg["num_classes"])
    return torch.randn(B, 6, cfg["input_dim"]), (B, cfg["output_dim"])
