"""Studies as grids: models × tasks × variants × seeds -> named runs carrying their axis values."""

import pytest

from patchbench.errors import ConfigError
from patchbench.grid import expand_grid, grid_runs
from patchbench.recipe import resolve_recipe
from patchbench.studies.study import study_runs

GRID = {
    "variants": [{"name": "fpt"}, {"name": "upt", "model": {"pretrained": False, "freeze_trans": False}}],
    "tasks": [{"name": "xor", "task": "bit_xor", "data": {"n": 4}}, {"name": "mem", "task": "bit_memory", "train": {"max_steps": 7}}],
    "seeds": [0, 1],
}


def test_grid_names_configs_and_axes():
    runs = grid_runs(GRID)
    assert [r["name"] for r in runs] == [  # seeds outermost, then the axes in order
        "xor-fpt-s0", "xor-upt-s0", "mem-fpt-s0", "mem-upt-s0", "xor-fpt-s1", "xor-upt-s1", "mem-fpt-s1", "mem-upt-s1"]
    by = {r["name"]: r for r in runs}
    assert by["mem-upt-s1"] == {"name": "mem-upt-s1", "axes": {"task": "mem", "variant": "upt", "seed": 1},
                                "task": "bit_memory", "train": {"max_steps": 7, "seed": 1},
                                "model": {"pretrained": False, "freeze_trans": False}}
    assert by["xor-fpt-s0"] == {"name": "xor-fpt-s0", "axes": {"task": "xor", "variant": "fpt", "seed": 0},
                                "task": "bit_xor", "data": {"n": 4}, "train": {"seed": 0}}


def test_grid_name_template_and_later_axis_wins():
    runs = grid_runs({"name": "{variant}-{task}-s{seed}", "models": [{"name": "m", "model": {"name": "fpt", "dropout": 0.1}}],
                      "tasks": [{"name": "t", "model": {"dropout": 0.0}}], "variants": [{"name": "v"}], "seeds": [3]})
    assert [r["name"] for r in runs] == ["v-t-s3"]
    assert runs[0]["model"] == {"name": "fpt", "dropout": 0.0}
    with pytest.raises(ConfigError, match=r"grid.name: template '\{variant\}' gives 'v' twice"):
        grid_runs({"name": "{variant}", "variants": [{"name": "v"}], "seeds": [1, 2]})


@pytest.mark.parametrize("grid,match", [
    ({"tasks": [{"task": "bit_xor"}]}, r"grid.tasks\[0\]: expected a mapping with a name"),
    ({"tasks": [{"name": "a", "lr": 1}]}, r"grid.tasks\[0\].lr: unknown key"),
    ({"seeds": [0, 0]}, r"grid.seeds: \[0, 0\] repeats a seed"),
    ({"seeds": "0,1"}, r"grid.seeds: expected a non-empty list of integers"),
    ({"axes": []}, r"grid.axes: unknown key"),
    ({}, r"grid: no axis"),
])
def test_grid_errors_name_the_key(grid, match):
    with pytest.raises(ConfigError, match=match):
        grid_runs(grid)


RECIPE = {
    "model": {"name": "gpt2", "vocab_size": 0, "n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 16},
    "task": {"name": "next_token"},
    "train": {"max_steps": 5},
    "grid": {"models": [{"name": "small"}, {"name": "wide", "model": {"n_embd": 64}}], "seeds": [0, 1]},
    "presets": {
        "tweak": {"runs": [{"name": "wide-s1", "train": {"max_steps": 9}}]},
        "own": {"grid": {"models": [{"name": "tiny", "model": {"n_embd": 16}}], "seeds": [5]}},
    },
}


def test_preset_changes_one_generated_run_and_leaves_the_others():
    base = resolve_recipe(RECIPE, None, [])
    tweaked = resolve_recipe(RECIPE, "tweak", [])
    assert [r["name"] for r in tweaked["runs"]] == ["small-s0", "wide-s0", "small-s1", "wide-s1"]
    changed = [a for a, b in zip(base["runs"], tweaked["runs"]) if a != b]
    assert [r["name"] for r in changed] == ["wide-s1"]
    assert tweaked["runs"][3]["train"] == {"seed": 1, "max_steps": 9} and tweaked["runs"][3]["axes"] == {"model": "wide", "seed": 1}


def test_a_presets_own_grid_defines_the_runs_and_axes_reach_the_study():
    merged = resolve_recipe(RECIPE, "own", [])
    runs, axes = study_runs(merged)
    assert [r.name for r in runs] == ["tiny-s5"] and runs[0].train.seed == 5 and runs[0].model.n_embd == 16
    assert axes == {"tiny-s5": {"model": "tiny", "seed": 5}}


def test_runs_entry_outside_the_grid_is_refused():
    with pytest.raises(ConfigError, match=r"runs\[0\]: 'nope' is not a run of the grid"):
        expand_grid({"grid": {"seeds": [0]}, "runs": [{"name": "nope"}]})


def test_hand_written_runs_get_axes_and_study_seeds():
    merged = {k: v for k, v in RECIPE.items() if k not in ("grid", "presets")}
    merged["runs"] = [{"name": "a"}, {"name": "b", "model": {"n_embd": 64}}]
    merged["study"] = {"seeds": [1, 2]}
    runs, axes = study_runs(merged)
    assert [r.name for r in runs] == ["a-s1", "a-s2", "b-s1", "b-s2"]
    assert axes["b-s2"] == {"run": "b", "seed": 2}
    with pytest.raises(ConfigError, match="study.seeds: the grid already has a seeds axis"):
        study_runs({**resolve_recipe(RECIPE, None, []), "study": {"seeds": [1]}})


def test_grid_overrides_apply_before_expansion_and_need_a_grid():
    merged = resolve_recipe(RECIPE, None, ["grid.seeds=[7]", "train.max_steps=3"])
    assert [r["name"] for r in merged["runs"]] == ["small-s7", "wide-s7"] and merged["train"]["max_steps"] == 3
    plain = {k: v for k, v in RECIPE.items() if k not in ("grid", "presets")}
    with pytest.raises(ConfigError, match=r"override 'grid.seeds=\[0\]': recipe has no grid"):
        resolve_recipe(plain, None, ["grid.seeds=[0]"])
