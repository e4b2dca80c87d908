"""Override precedence: the user's key=value always wins (or is refused in one line naming the run);
`--run X` scopes it to that run; presets merge `runs:` entries by name."""

from pathlib import Path

import pytest
import yaml
from conftest import tiny_text_recipe

from patchbench.cli import main
from patchbench.errors import ConfigError
from patchbench.recipe import expand_runs, load_recipe, resolve_recipe, select_run

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "pacing_vs_gpt2.yaml"


def _runs(preset, overrides, run=None):
    runs = expand_runs(resolve_recipe(load_recipe(RECIPE), preset, overrides, "r", run=run))
    return {r.name: r for r in runs}


def test_run_scoped_override_is_checked_against_that_runs_model_only():
    runs = _runs("cpu", ["model.n_layer=1"], run="gpt2")
    assert runs["gpt2"].model.n_layer == 1
    assert runs["pacing"].model.depths == [2, 2, 7, 1]  # untouched, and not checked against n_layer
    assert select_run(list(runs.values()), "gpt2", "r").model.n_layer == 1
    with pytest.raises(ConfigError, match=r"--run 'nosuch': not in r; valid runs: pacing, gpt2"):
        _runs("cpu", [], run="nosuch")


def test_command_line_beats_the_run_entries_and_the_preset():
    assert _runs("full", [])["pacing"].train.channels_last is True  # set by the preset's run entry
    runs = _runs("full", ["train.channels_last=false"])
    assert runs["pacing"].train.channels_last is False and runs["gpt2"].train.channels_last is False
    assert _runs("cpu", ["model.vocab_size=4096"], run="pacing")["pacing"].model.vocab_size == 4096  # the entry sets 0
    with pytest.raises(ConfigError, match=r"unknown model 'nosuchmodel'"):
        _runs("cpu", ["model.name=nosuchmodel"])


def test_study_override_applies_to_every_run_and_names_the_run_that_lacks_the_key():
    runs = _runs("cpu", ["optim.lr=0.01", "model.vocab_size=4096"])
    assert all(r.optim.lr == 0.01 and r.model.vocab_size == 4096 for r in runs.values())
    with pytest.raises(ConfigError, match=r"^run 'pacing': model.n_layer: unknown key"):
        _runs("cpu", ["model.n_layer=1"])


def test_presets_merge_runs_by_name():
    runs = _runs("full", [])
    assert runs["pacing"].model.depths == [3, 3, 24, 3] and runs["pacing"].model.vocab_size == 50257  # kept + changed
    assert runs["gpt2"].model.n_embd == 768 and runs["gpt2"].model.vocab_size == 50257
    raw = {"task": "next_token", "model": {"name": "gpt2"}, "runs": [{"name": "a"}, {"name": "b"}],
           "presets": {"more": {"runs": [{"name": "c"}]}, "only": {"replace_runs": True, "runs": [{"name": "c"}]}}}
    assert [r["name"] for r in resolve_recipe(raw, "more", [])["runs"]] == ["a", "b", "c"]
    assert [r["name"] for r in resolve_recipe(raw, "only", [])["runs"]] == ["c"]
    with pytest.raises(ConfigError, match=r"presets.bad.runs\[0\]: a preset's run needs a name"):
        resolve_recipe({**raw, "presets": {"bad": {"runs": [{"model": {"n_layer": 1}}]}}}, "bad", [])


@pytest.fixture
def recipe(corpus, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_text_recipe(corpus)))
    return path


def test_cli_run_override_and_the_error_that_names_the_run(recipe, capsys):
    assert main(["train", str(recipe), "--run", "gpt2", "--dry-run", "model.n_layer=1"]) == 0
    assert "dry run ok: gpt2" in capsys.readouterr().out
    assert main(["study", str(recipe), "--out", str(recipe.parent / "s"), "model.n_layer=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("patchbench: error: run 'pacing': model.n_layer: unknown key") and "Traceback" not in err
