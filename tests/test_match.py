"""`patchbench match`: the knob value of a family closest in parameter count to a target, counted on the meta device."""

from __future__ import annotations

import pytest

from patchbench.cli import main
from patchbench.errors import ConfigError
from patchbench.studies.match import match, with_knob

PACING_CPU = ["vocab_size=2048", "n_positions=64", "patch=8", "depths=[2,2,2,1]", "dims=[32,64,128,256]", "readout_channels=1"]
GPT2_CPU = ["vocab_size=2048", "n_embd=192", "n_layer=4", "n_head=4", "n_positions=64"]


def test_convmixer_width_matches_resnet18_within_one_percent():
    r = match("resnet18", "convmixer", "dim", ["depth=8", "kernel=9", "patch=16"], num_classes=2, step=8)
    assert r.target_params == 11_177_538  # timm resnet18 with a 2-class head
    assert abs(r.best.rel) < 0.01 and r.best.value % 8 == 0
    below = [c for c in r.table if c.value < r.best.value]
    above = [c for c in r.table if c.value > r.best.value]
    assert below and above and all(abs(c.diff) >= abs(r.best.diff) for c in r.table)


def test_convmixer_depth_for_resnet18_size_is_35_not_the_seeds_8():
    r = match("resnet18", "convmixer", "depth", ["dim=512", "kernel=9", "patch=16"], num_classes=2)
    assert r.best.value == 35 and abs(r.best.rel) < 0.01
    seed = match("resnet18", "convmixer", "depth", ["dim=512", "kernel=9", "patch=16"], num_classes=2, values=[8])
    assert seed.best.params == 2_849_282  # the seed's "ConvMixer 16/8, to match ResNet18" is a quarter of its size


def test_pacing_stage3_depth_matches_gpt2_through_a_list_knob():
    r = match("gpt2", "pacing", "depths.2", PACING_CPU, GPT2_CPU)
    assert r.best.value == 7 and r.target_params == 2_185_344 and abs(r.best.rel) < 0.01  # the recipe's cpu preset


def test_knob_refusals():
    with pytest.raises(ConfigError, match=r"--knob 'width': convmixer has no field 'width'; valid fields: .*depth"):
        match("resnet18", "convmixer", "width")
    with pytest.raises(ConfigError, match=r"--knob 'depths': depths is \[3, 3, 24, 3\], not an integer; index a list with depths\.N"):
        match("gpt2", "pacing", "depths")
    with pytest.raises(ConfigError, match=r"--knob 'depths\.4': '4' is not an index of a list of 4 entries"):
        with_knob({"name": "pacing", "depths": [1, 2, 3, 4]}, "depths.4", 1)


def test_cli_prints_the_table_and_refuses_bad_input(capsys):
    assert main(["match", "resnet18", "convmixer", "--knob", "depth", "--set", "dim=512", "kernel=9", "patch=16", "--values", "33:37"]) == 0
    out = capsys.readouterr().out
    assert "target resnet18: 11,176,512 parameters" in out and "depth=35:" in out and "<- closest" in out
    assert main(["match", "resnet18", "convmixer", "--knob", "depth", "--set", "bogus=1"]) == 2
    assert "model.bogus: unknown key" in capsys.readouterr().err
