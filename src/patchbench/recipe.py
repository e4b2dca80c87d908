"""Recipes: YAML mapping + preset + command-line overrides -> the typed RunConfig of every run.

A recipe is a YAML mapping with the sections of `RunConfig` (task, data, model, optim, train) and,
for a study, a `runs:` list whose entries override those sections per run. `presets:` maps a preset
name (cpu, full, ...) to a mapping merged over the recipe; a preset's `runs:` entries merge into the
recipe's runs of the same name (new names are appended), unless the preset says `replace_runs: true`.

`key=value` overrides (dotted keys, YAML values) are the user's word and always win: they are merged
after the run entries, so a run entry cannot undo them. With `run=NAME` they apply to that run only;
otherwise to every run, and a key one run's model lacks is a ConfigError naming that run.
`runs.NAME.key=value` overrides one run of a study.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from patchbench import registry, yamlio
from patchbench.config import OptimConfig, RunConfig, TaskConfig, TrainConfig, build_dataclass
from patchbench.errors import ConfigError
from patchbench.grid import expand_grid, yield_to_preset_grid

RECIPE_KEYS = {"name", "description", "task", "data", "model", "optim", "train", "runs", "presets", "study", "grid", "claims"}
RUN_SECTIONS = ("task", "data", "model", "optim", "train")


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_override(text: str, what: str = "override", example: str = "train.batch_size=4") -> dict:
    """'train.batch_size=4' -> {'train': {'batch_size': 4}} (value parsed as YAML). The one parser of
    key=value text: recipe overrides, `match --set`; `what` and `example` word its errors."""
    if "=" not in text:
        raise ConfigError(f"{what} {text!r}: expected KEY=VALUE, e.g. {example}")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"{what} {text!r}: the key must be dotted names, e.g. {example}")
    try:
        value = yamlio.load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    node: dict = {}
    cur = node
    parts = key.split(".")
    for part in parts[:-1]:
        cur[part] = {}
        cur = cur[part]
    cur[parts[-1]] = value
    return node


def load_recipe(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"recipe {str(p)!r}: no such file; give a YAML recipe such as recipes/pacing_vs_gpt2.yaml")
    try:
        data = yamlio.load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"recipe {str(p)!r}: not a text file (not UTF-8); give a YAML recipe") from None
    except OSError as e:
        raise ConfigError(f"recipe {str(p)!r}: cannot be read ({e.strerror})") from None
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0]
        raise ConfigError(f"recipe {str(p)!r}: not valid YAML ({first})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {str(p)!r}: expected a YAML mapping at the top level")
    return data


def _run_names(entries: list, where: str) -> list:
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: expected a list of runs, each with a name and its overrides")
    return [e.get("name") if isinstance(e, dict) else None for e in entries]


def merge_preset(merged: dict, preset: dict, where: str) -> dict:
    """Merge a preset over the recipe; its `runs:` entries merge into the recipe's runs by name."""
    preset = dict(preset or {})
    replace = preset.pop("replace_runs", False)
    runs = preset.pop("runs", None)
    out = deep_merge(merged, preset)
    if runs is None:
        return out
    if replace or not merged.get("runs"):
        out["runs"] = copy.deepcopy(runs)
        return out
    entries = copy.deepcopy(merged["runs"])
    names = _run_names(entries, "runs")
    for i, entry in enumerate(runs):
        name = entry.get("name") if isinstance(entry, dict) else None
        if name is None:
            raise ConfigError(f"{where}.runs[{i}]: a preset's run needs a name (to merge into the recipe's run of that name)")
        if name in names:
            entries[names.index(name)] = deep_merge(entries[names.index(name)], entry)
        else:
            entries.append(copy.deepcopy(entry))
            names.append(name)
    out["runs"] = entries
    return out


def resolve_recipe(raw: dict, preset: str | None, overrides: list[str], source: str = "recipe", run: str | None = None) -> dict:
    """Apply a preset and the user's overrides to a raw recipe mapping; returns the merged mapping.

    The overrides are merged into the shared sections and into every run entry (or only run `run`'s),
    so that no run entry can undo them."""
    unknown = set(raw) - RECIPE_KEYS
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key {min(unknown)!r}; valid keys: {', '.join(sorted(RECIPE_KEYS))}")
    merged = {k: v for k, v in raw.items() if k != "presets"}
    presets = raw.get("presets") or {}
    if preset:
        if preset not in presets:
            raise ConfigError(f"--preset {preset!r}: not in {source}; valid presets: {', '.join(presets) or 'none'}")
        merged = merge_preset(yield_to_preset_grid(merged, presets[preset]), presets[preset], f"presets.{preset}")
    grid_overrides = [(text, parse_override(text)) for text in overrides if text.startswith("grid.")]
    merged = expand_grid(merged, source, grid_overrides)  # a grid becomes the runs (grid.* overrides applied first)
    overrides = [text for text in overrides if not text.startswith("grid.")]
    entries = copy.deepcopy(merged.get("runs") or [])
    names = _run_names(entries, "runs")
    if run is not None and entries and run not in names:
        raise ConfigError(f"--run {run!r}: not in {source}; valid runs: {', '.join(map(str, names))}")
    for text in overrides:
        over = parse_override(text)
        for name, value in (over.pop("runs", None) or {}).items():  # runs.NAME.key=value: one run of a study
            if name not in names or not isinstance(value, dict):
                raise ConfigError(f"override {text!r}: no run {name!r}; valid runs: {', '.join(map(str, names)) or 'none'} "
                                  "(as runs.NAME.key=value)")
            entries[names.index(name)] = deep_merge(entries[names.index(name)], value)
        per_run = {k: v for k, v in over.items() if k in RUN_SECTIONS}
        if run is None or not entries:
            merged = deep_merge(merged, over)
        else:
            merged = deep_merge(merged, {k: v for k, v in over.items() if k not in RUN_SECTIONS})
        for i, name in enumerate(names):
            if per_run and (run is None or name == run):
                entries[i] = deep_merge(entries[i], per_run)
    if entries:
        merged["runs"] = entries
    return merged


def build_run_config(section: dict, name: str | None = None) -> RunConfig:
    """Turn one run's merged mapping into a typed RunConfig (model/data typed by the registry)."""
    section = dict(section)
    extra = set(section) - {"name", "description", "task", "data", "model", "optim", "train", "study", "runs"}
    if extra:
        raise ConfigError(f"run: unknown key {min(extra)!r}; valid keys: name, task, data, model, optim, train")
    task_raw = section.get("task") or {}
    if isinstance(task_raw, str):
        task_raw = {"name": task_raw}
    task_cfg = build_dataclass(TaskConfig, task_raw, "task")
    task_entry = registry.get_task(task_cfg.name)
    data_cfg = build_dataclass(task_entry.data_config, section.get("data"), "data")

    model_raw = dict(section.get("model") or {})
    if "name" not in model_raw:
        raise ConfigError(f"model.name: missing; valid models: {', '.join(registry.list_models())}")
    model_cfg = registry.build_model_config(model_raw)

    return RunConfig(
        name=str(name or section.get("name") or model_cfg.name),
        task=task_cfg,
        data=data_cfg,
        model=model_cfg,
        optim=build_dataclass(OptimConfig, section.get("optim"), "optim"),
        train=build_dataclass(TrainConfig, section.get("train"), "train"),
    )


def expand_runs(merged: dict) -> list[RunConfig]:
    """A study's runs: each `runs:` entry merged over the shared sections; a plain recipe is one run.
    An error in one run of several names that run."""
    shared = {k: v for k, v in merged.items() if k not in ("runs", "study", "description", "claims")}
    entries = merged.get("runs") or [{}]
    _run_names(entries, "runs")
    runs, seen = [], set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(f"runs[{i}]: expected a mapping with name/model/... overrides")
        section = deep_merge(shared, {k: v for k, v in entry.items() if k not in ("name", "axes")})  # axes: a grid's data
        try:
            cfg = build_run_config(section, name=entry.get("name"))
        except ConfigError as e:
            if len(entries) == 1:
                raise
            raise ConfigError(f"run {entry.get('name') or i!r}: {e}") from None
        if cfg.name in seen:
            raise ConfigError(f"runs[{i}].name: {cfg.name!r} is used twice; run names must be unique")
        seen.add(cfg.name)
        runs.append(cfg)
    return runs


def select_run(runs: list[RunConfig], name: str | None, source: str) -> RunConfig:
    """The run `--run NAME` asks for (default: the first)."""
    if name is None:
        return runs[0]
    for r in runs:
        if r.name == name:
            return r
    raise ConfigError(f"--run {name!r}: not in {source}; valid runs: {', '.join(r.name for r in runs)}")


def run_config_from_dict(data: dict) -> RunConfig:
    """Inverse of RunConfig.to_dict (used to re-create a run from its directory)."""
    return build_run_config(data, name=data.get("name"))
