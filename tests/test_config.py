"""Typed configs: recipes, presets, dotted overrides, one-line errors naming key and choices."""

from pathlib import Path

import pytest
import yaml

from patchbench.errors import ConfigError
from patchbench.recipe import expand_runs, load_recipe, parse_override, resolve_recipe, run_config_from_dict

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_override_parses_yaml_values():
    assert parse_override("train.batch_size=4") == {"train": {"batch_size": 4}}
    assert parse_override("model.depths=[3,3,24,3]") == {"model": {"depths": [3, 3, 24, 3]}}
    assert parse_override("data.corpus=my.txt") == {"data": {"corpus": "my.txt"}}


@pytest.mark.parametrize("text", ["train.batch_size", "=3", "a..b=1"])
def test_bad_override_syntax(text):
    with pytest.raises(ConfigError, match="override"):
        parse_override(text)


@pytest.mark.parametrize("preset", ["cpu", "full"])
def test_shipped_recipe_presets_resolve(preset):
    merged = resolve_recipe(load_recipe(RECIPES / "pacing_vs_gpt2.yaml"), preset, [], "recipe")
    runs = expand_runs(merged)
    assert [r.name for r in runs] == ["pacing", "gpt2"]
    assert runs[0].model.name == "pacing" and runs[1].model.name == "gpt2"


def test_full_preset_is_the_seed_protocol():
    runs = expand_runs(resolve_recipe(load_recipe(RECIPES / "pacing_vs_gpt2.yaml"), "full", [], "r"))
    for r in runs:
        assert (r.train.batch_size, r.train.accum_steps, r.train.eval_every, r.train.final_metric_window) == (2, 4, 10, 50)
        optim = (r.optim.name, r.optim.lr, r.optim.weight_decay, r.optim.betas, r.optim.eps, r.optim.clip)
        assert optim == ("adamw", 2e-4, 0.0, [0.9, 0.999], 1e-8, 1.0)
        assert r.data.context == 1024 and r.data.val_windows == 100 and r.task.objective == "last_token"


def test_run_scoped_override_changes_only_that_run():
    runs = expand_runs(resolve_recipe(load_recipe(RECIPES / "pacing_vs_gpt2.yaml"), "cpu", ["runs.gpt2.model.n_layer=2"], "r"))
    assert runs[1].model.n_layer == 2 and runs[0].model.depths == [2, 2, 7, 1]


def test_round_trip_through_yaml():
    runs = expand_runs(resolve_recipe(load_recipe(RECIPES / "pacing_vs_gpt2.yaml"), "cpu", ["optim.lr=0.01"], "r"))
    for r in runs:
        again = run_config_from_dict(yaml.safe_load(r.to_yaml()))
        assert again == r


@pytest.mark.parametrize("override, pattern", [
    ("train.bacth_size=4", r"train\.bacth_size: unknown key; valid keys: .*batch_size"),
    ("train.batch_size=four", r"train\.batch_size: expected an integer"),
    ("runs.pacing.model.depths=7", r"model\.depths: expected a list"),
    ("runs.gpt3.model.n_layer=2", r"no run 'gpt3'; valid runs: pacing, gpt2"),
    ("optim.lr=true", r"optim\.lr: expected a number"),
    ("train.compile=1", r"train\.compile: expected true or false"),
    ("data.context=0", r"data\.context=0: must be an integer >= 1"),
])
def test_config_errors_name_the_key(override, pattern):
    with pytest.raises(ConfigError, match=pattern) as e:
        expand_runs(resolve_recipe(load_recipe(RECIPES / "pacing_vs_gpt2.yaml"), "cpu", [override], "r"))
    assert "\n" not in str(e.value)


def test_unknown_model_and_task_list_valid_choices():
    with pytest.raises(ConfigError, match=r"unknown model 'gpt5'; valid models: .*gpt2.*pacing"):
        expand_runs({"model": {"name": "gpt5"}})
    with pytest.raises(ConfigError, match=r"unknown task 'next_word'; valid tasks: .*next_token"):
        expand_runs({"task": {"name": "next_word"}, "model": {"name": "gpt2"}})


def test_unknown_preset_and_missing_recipe(tmp_path):
    with pytest.raises(ConfigError, match="valid presets: full, full_bf16, cpu"):
        resolve_recipe(load_recipe(RECIPES / "pacing_vs_gpt2.yaml"), "gpu", [], "r")
    with pytest.raises(ConfigError, match="no such file"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(bad)


def _numeric_fields_without_range(cls) -> list[str]:
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    numeric = (int, float, list[int], list[float])
    return [f.name for f in dataclasses.fields(cls) if hints[f.name] in numeric and "range" not in f.metadata]


def test_every_number_declares_its_valid_range():
    """A new numeric field must say what is valid (config.num / config.bounds), so build_dataclass checks it."""
    from patchbench import registry
    from patchbench.config import OptimConfig, TrainConfig
    from patchbench.tasks.image_classification import ImageDataConfig
    from patchbench.tasks.next_token import TextDataConfig

    classes = {OptimConfig, TrainConfig, TextDataConfig, ImageDataConfig}
    classes |= {registry.get_model(name).config for name in registry.list_models()}
    missing = {c.__name__: m for c in classes if (m := _numeric_fields_without_range(c))}
    assert missing == {"ImageDataConfig": ["val_fraction"]}  # checked by its validate(): 0 < val_fraction < 1


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=0", "train.batch_size=0: must be an integer >= 1"),
    ("optim.betas=[0.9,1.5]", "optim.betas[1]=1.5: must be a finite number >= 0 and < 1"),
    ("optim.lr=.nan", "optim.lr=nan: must be a finite number > 0"),
    ("runs.gpt2.model.dropout=1.5", "model.dropout=1.5: must be a finite number >= 0 and < 1"),
    ("runs.pacing.model.depths=[1,0,1,1]", "model.depths[1]=0: must be an integer >= 1"),
])
def test_ranges_are_checked_where_the_dataclass_is_built(override, message):
    with pytest.raises(ConfigError) as e:
        expand_runs(resolve_recipe(load_recipe(RECIPES / "pacing_vs_gpt2.yaml"), "cpu", [override], "r"))
    assert str(e.value).endswith(message) and "\n" not in str(e.value)


@pytest.mark.parametrize("text, value", [("1e-3", 1e-3), ("1e300", 1e300), (".5", 0.5), ("-1e-5", -1e-5), ("2E-4", 2e-4),
                                         ("1.5", 1.5), ("7", 7), ("1e", "1e"), ("0x10", 16), (".inf", float("inf"))])
def test_yaml_floats_as_yaml_1_2_reads_them(text, value):
    from patchbench import yamlio

    assert yamlio.load(text) == value and type(yamlio.load(text)) is type(value)
    assert parse_override(f"optim.lr={text}") == {"optim": {"lr": value}}
