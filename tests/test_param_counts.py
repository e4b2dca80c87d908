"""Full-size parameter counts, counted on the meta device (no memory, no download)."""

import pytest
import torch

from patchbench.errors import ConfigError
from patchbench.models.base import count_params
from patchbench.registry import create_model

GPT2_SMALL = 124_439_808


def _count(name, **kw):
    with torch.device("meta"):
        return count_params(create_model(name, **kw))["total"]


def test_gpt2_small_exact_with_tied_embeddings():
    assert _count("gpt2", n_embd=768, n_layer=12, n_head=12, n_positions=1024, vocab_size=50257) == GPT2_SMALL


def test_pacing_seed_layout_matches_seed_count():
    n = _count("pacing", layout="seed", depths=[3, 3, 20, 3])
    assert n == 124_745_472  # the seed's 124.75M
    assert abs(n - GPT2_SMALL) / GPT2_SMALL < 0.003


def test_pacing_all_tokens_layout_within_one_percent_at_stage3_depth_24():
    n = _count("pacing", layout="all", depths=[3, 3, 24, 3])
    assert n == 123_830_016
    assert abs(n - GPT2_SMALL) / GPT2_SMALL < 0.01
    # depth 20 (the seed's) would be 7% short: the knob matters
    assert abs(_count("pacing", layout="all", depths=[3, 3, 20, 3]) - GPT2_SMALL) / GPT2_SMALL > 0.05


def test_pacing_readout_channels_only_change_the_dead_readout():
    full = _count("pacing", layout="all")
    live = _count("pacing", layout="all", readout_channels=1)
    assert full - live == 1024 * 1023 * 3 + 1023  # ConvTranspose1d(1024, R, k=3) weights + bias


def test_pacing_pools_positions_when_they_do_not_divide_the_width():
    from patchbench.models.pacing import readout_positions

    assert readout_positions(768, 256) == 256  # the seed's sizes: no pooling
    assert readout_positions(768, 529) == 384 and readout_positions(768, 1024) == 768  # 2048 / 4096 tokens
    # 144 tokens of 8x8 -> 12x12 grid -> 96 px -> 3x3 = 9 positions; 192 % 9 != 0 -> pool to 8, kernel 24
    model = create_model("pacing", vocab_size=50, n_positions=144, patch=8, depths=[1, 1, 1, 1], dims=[8, 8, 8, 8])
    assert model.n_cells == 9 and model.n_readout_in == 8 and model.readout.kernel_size == (24,)
    logits = model(torch.randint(0, 50, (2, 144)))
    assert logits.shape == (2, 50) and torch.isfinite(logits).all()


def test_pacing_invalid_patch_is_a_config_error():
    with pytest.raises(ConfigError, match="model.patch"):
        create_model("pacing", n_positions=64, patch=6)


def test_params_command_counts_the_full_preset_on_meta(capsys):
    from pathlib import Path

    from patchbench.cli import main

    recipe = str(Path(__file__).resolve().parents[1] / "recipes" / "pacing_vs_gpt2.yaml")
    assert main(["params", recipe, "--preset", "full"]) == 0
    out = capsys.readouterr().out
    assert "123,830,016 parameters" in out and "124,439,808 parameters" in out and "-0.49%" in out
    assert main(["params", recipe, "--preset", "cpu"]) == 2  # vocab from the tokenizer: a clear error
    assert "depends on the data" in capsys.readouterr().err
