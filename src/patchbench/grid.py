"""A study as a grid: `models × tasks × variants × seeds` written once, expanded into named runs.

    grid:
      name: "{variant}-{task}-s{seed}"     # optional; default: the axes present, in this order, joined by "-"
      models:   [{name: pacing, model: {...}}, {name: gpt2, model: {...}}]
      tasks:    [{name: bit_xor, task: bit_xor, data: {...}}, ...]
      variants: [{name: fpt}, {name: upt, model: {pretrained: false, freeze_trans: false}}]
      seeds:    [0, 1, 2]                  # sets train.seed

Every axis is a list of named entries; an entry's other keys are run sections (task, data, model, optim,
train) merged in axis order (models, then tasks, then variants; a later axis wins). The generated runs
carry their axis values as data (`axes: {model: pacing, task: bit_xor, seed: 0}`), so a report groups
and compares runs by those values, never by parsing names.

A `runs:` entry whose name is a generated run's name is merged over it (a preset tweaking one run);
any other name is a ConfigError. The grid defines the study: a recipe with a `grid:` has no other runs,
and a preset with its own `grid:` replaces the recipe's grid and runs.
Pure functions of plain mappings: no registry, no I/O.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from patchbench.errors import ConfigError


def deep_merge(base: dict, over: dict) -> dict:
    """`over` merged into a copy of `base`; mappings merge key by key, anything else is replaced."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out

AXES = ("models", "tasks", "variants")  # list axes, in merge order; then seeds
AXIS_KEY = {"models": "model", "tasks": "task", "variants": "variant", "seeds": "seed"}  # the name in `axes:` and templates
SECTIONS = ("task", "data", "model", "optim", "train")
GRID_KEYS = set(AXES) | {"seeds", "name"}


def _axis(grid: dict, axis: str, where: str) -> list[tuple[str, dict]]:
    """[(value name, sections)] of one axis; [] when the axis is absent."""
    entries = grid.get(axis)
    if entries is None:
        return []
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}.{axis}: expected a non-empty list of entries, each with a name, e.g. [{{name: fpt}}]")
    out, seen = [], set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise ConfigError(f"{where}.{axis}[{i}]: expected a mapping with a name, e.g. {{name: gpt2, model: {{...}}}}")
        extra = set(entry) - set(SECTIONS) - {"name"}
        if extra:
            raise ConfigError(f"{where}.{axis}[{i}].{min(extra)}: unknown key; valid keys: name, {', '.join(SECTIONS)}")
        if entry["name"] in seen:
            raise ConfigError(f"{where}.{axis}[{i}].name: {entry['name']!r} is used twice in this axis")
        seen.add(entry["name"])
        out.append((entry["name"], {k: v for k, v in entry.items() if k != "name"}))
    return out


def _seeds(grid: dict, where: str) -> list[int]:
    seeds = grid.get("seeds")
    if seeds is None:
        return []
    if not isinstance(seeds, list) or not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise ConfigError(f"{where}.seeds: expected a non-empty list of integers, e.g. [0, 1, 2]")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}.seeds: {seeds} repeats a seed")
    return list(seeds)


def _name(template: str | None, axes: dict[str, Any], where: str) -> str:
    if template is None:
        parts = [str(axes[AXIS_KEY[a]]) for a in AXES if AXIS_KEY[a] in axes]
        name = "-".join(parts)
        return f"{name}-s{axes['seed']}" if "seed" in axes else name
    try:
        return template.format(**axes)
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"{where}.name: template {template!r} cannot be filled ({e}); "
                          f"fields: {', '.join('{' + k + '}' for k in axes)}") from None


def grid_runs(grid: dict, where: str = "grid") -> list[dict]:
    """The `runs:` entries of a grid: one per combination, each `{name, axes, <sections>}`."""
    if not isinstance(grid, dict):
        raise ConfigError(f"{where}: expected a mapping with models / tasks / variants / seeds")
    unknown = set(grid) - GRID_KEYS
    if unknown:
        raise ConfigError(f"{where}.{min(unknown)}: unknown key; valid keys: {', '.join(sorted(GRID_KEYS))}")
    axes = [(a, _axis(grid, a, where)) for a in AXES]
    axes = [(a, vals) for a, vals in axes if vals]
    seeds = _seeds(grid, where)
    if not axes and not seeds:
        raise ConfigError(f"{where}: no axis; give at least one of models, tasks, variants, seeds")
    template = grid.get("name")
    if template is not None and not isinstance(template, str):
        raise ConfigError(f"{where}.name: expected a template string such as '{{model}}-{{task}}-s{{seed}}'")
    runs, names = [], set()
    # seeds outermost: every configuration's first seed runs before any second seed (a study cut short still
    # compares everything, and a machine's changing load falls on all configurations alike)
    for combo in itertools.product(*([seeds] if seeds else []), *[vals for _, vals in axes]):
        values: dict[str, Any] = {}
        sections: dict = {}
        for (axis, _), (value, secs) in zip(axes, combo[1:] if seeds else combo):
            values[AXIS_KEY[axis]] = value
            sections = deep_merge(sections, secs)
        if seeds:
            values["seed"] = combo[0]
            sections = deep_merge(sections, {"train": {"seed": combo[0]}})
        name = _name(template, values, where)
        if name in names:
            raise ConfigError(f"{where}.name: template {template!r} gives {name!r} twice; include every axis with more than one value")
        names.add(name)
        runs.append({"name": name, "axes": values, **sections})
    return runs


def yield_to_preset_grid(recipe: dict, preset: dict | None) -> dict:
    """A preset with its own grid defines the study: the recipe's grid and runs make way for it."""
    if isinstance(preset, dict) and "grid" in preset:
        return {k: v for k, v in recipe.items() if k not in ("grid", "runs")}
    return recipe


def expand_grid(recipe: dict, where: str = "recipe", overrides: list[tuple[str, dict]] | tuple = ()) -> dict:
    """A recipe mapping with `grid:` -> the same mapping with the generated `runs:` and no grid.

    Its own `runs:` entries must name generated runs: they are merged over them. The user's `grid.KEY=VALUE`
    overrides, given parsed as (text, {"grid": {...}}), are applied to the grid first, e.g. grid.seeds=[0]."""
    if overrides and "grid" not in recipe:
        raise ConfigError(f"override {overrides[0][0]!r}: {where} has no grid (its runs are written out); use runs.NAME.key=value")
    for _, over in overrides:
        recipe = deep_merge(recipe, over)
    if "grid" not in recipe:
        return recipe
    out = {k: v for k, v in recipe.items() if k != "grid"}
    runs = grid_runs(recipe["grid"], f"{where}.grid")
    names = [r["name"] for r in runs]
    tweaks = recipe.get("runs") or []
    if not isinstance(tweaks, list):
        raise ConfigError(f"{where}.runs: expected a list of runs, each with a name and its overrides")
    for i, entry in enumerate(tweaks):
        name = entry.get("name") if isinstance(entry, dict) else None
        if name not in names:
            shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            raise ConfigError(f"{where}.runs[{i}]: {name!r} is not a run of the grid (with a grid, runs: only adjusts generated runs; "
                              f"valid: {shown})")
        j = names.index(name)
        runs[j] = deep_merge(runs[j], {k: v for k, v in entry.items() if k not in ("name", "axes")})
    out["runs"] = copy.deepcopy(runs)
    return out
