"""Typed configs: YAML recipes + presets + dotted overrides -> validated dataclasses.

A recipe is a YAML mapping with the sections of `RunConfig` (task, data, model, optim, train) and,
for a study, a `runs:` list whose entries override those sections per run. `presets:` maps a preset
name (cpu, full, ...) to a mapping merged over the recipe. `key=value` overrides (dotted keys, YAML
values) are merged last. Every section is a dataclass; an unknown key, a wrong type or an unknown
model/task name is a `ConfigError` whose one-line message names the key and the valid choices.

The model section and the data section are typed by the registry: each model family and each task
declares its own config dataclass, so `model.depths=[3,3,24,3]` is checked against the PACING config.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A user-facing configuration error; its message is one line naming the key and valid choices."""


# --------------------------------------------------------------------------------------------------
# sections shared by every run


@dataclass
class TaskConfig:
    name: str = "next_token"
    objective: str = ""  # task-specific; "" = the task's default (e.g. last_token)


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | adam | sgd
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    momentum: float = 0.9  # sgd only
    schedule: str = "constant"  # constant | cosine (linear warm-up, cosine decay to min_lr)
    warmup_steps: int = 0
    min_lr: float = 0.0
    clip: float = 1.0  # max grad norm; 0 disables
    fused: str = "auto"  # auto (fused AdamW on CUDA) | on | off


@dataclass
class TrainConfig:
    seed: int = 43
    batch_size: int = 2
    accum_steps: int = 4
    epochs: float = 1.0
    max_steps: int = 0  # optimizer steps; 0 = run the full `epochs`
    eval_every: int = 10  # optimizer steps between validations
    final_metric_window: int = 50  # final metric = mean of the last N validation values
    checkpoint_every: int = 0  # optimizer steps; 0 = at every validation
    keep_best: bool = False  # also keep the weights of the lowest validation loss in RUN/best/
    stop_after_steps: int = 0  # stop cleanly (checkpoint saved) after N steps; resume later
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto (bf16 on CUDA if supported, else fp32) | fp32 | bf16 | fp16
    compile: bool = False
    channels_last: bool = False
    deterministic: bool = True  # on CPU: bitwise-reproducible runs and resumes
    num_workers: int = 0
    progress: bool = True
    sample_tokens: int = 64  # tokens sampled into the report after training (text tasks)
    sample_prompt: str = ""
    sample_method: str = "softmax"  # softmax (top-k by probability) | seed (PACING's inference.py: uniform over the top k)


@dataclass
class ModelConfig:
    """Only the name is generic; the registry swaps in the family's own dataclass."""

    name: str = "gpt2"


@dataclass
class RunConfig:
    name: str = "run"
    task: TaskConfig = field(default_factory=TaskConfig)
    data: Any = None  # the task's data dataclass
    model: Any = field(default_factory=ModelConfig)  # the model family's dataclass
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --------------------------------------------------------------------------------------------------
# building dataclasses from plain mappings, with one-line errors


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; accept ints for floats, lists for tuples."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (inner,) = typing.get_args(tp)[:1] or (Any,)
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, key)
    return value


def build_dataclass(cls: type, values: dict | None, prefix: str) -> Any:
    """Instantiate `cls` from a mapping; unknown keys and wrong types raise ConfigError."""
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"{prefix}.{key}: unknown key; valid keys: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], f"{prefix}.{key}")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        check()
    return obj


# --------------------------------------------------------------------------------------------------
# recipes, presets, overrides


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_override(text: str) -> dict:
    """'train.batch_size=4' -> {'train': {'batch_size': 4}} (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. train.batch_size=4")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: the key must be dotted names, e.g. optim.lr=1e-3")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
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
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0]
        raise ConfigError(f"recipe {str(p)!r}: not valid YAML ({first})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {str(p)!r}: expected a YAML mapping at the top level")
    return data


RECIPE_KEYS = {"name", "description", "task", "data", "model", "optim", "train", "runs", "presets", "study"}


def resolve_recipe(raw: dict, preset: str | None, overrides: list[str], source: str = "recipe") -> dict:
    """Apply a preset and overrides to a raw recipe mapping; returns the merged mapping."""
    unknown = set(raw) - RECIPE_KEYS
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key {min(unknown)!r}; valid keys: {', '.join(sorted(RECIPE_KEYS))}")
    merged = {k: v for k, v in raw.items() if k != "presets"}
    presets = raw.get("presets") or {}
    if preset:
        if preset not in presets:
            raise ConfigError(f"--preset {preset!r}: not in {source}; valid presets: {', '.join(presets) or 'none'}")
        merged = deep_merge(merged, presets[preset])
    for text in overrides:
        over = parse_override(text)
        if "runs" in over:  # runs.NAME.key=value overrides one run of a study
            merged = _override_run(merged, over.pop("runs"), text)
        merged = deep_merge(merged, over)
    return merged


def _override_run(merged: dict, over: dict, text: str) -> dict:
    merged = copy.deepcopy(merged)
    entries = merged.get("runs") or []
    names = [e.get("name") for e in entries if isinstance(e, dict)]
    for name, value in over.items():
        if name not in names or not isinstance(value, dict):
            raise ConfigError(f"override {text!r}: no run {name!r}; valid runs: {', '.join(map(str, names)) or 'none'} (as runs.NAME.key=value)")
        i = names.index(name)
        entries[i] = deep_merge(entries[i], value)
    return merged


def build_run_config(section: dict, name: str | None = None) -> RunConfig:
    """Turn one run's merged mapping into a typed RunConfig (model/data typed by the registry)."""
    from patchbench import registry

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
    model_entry = registry.get_model(model_raw["name"])
    model_cfg = build_dataclass(model_entry.config, model_raw, "model")

    return RunConfig(
        name=str(name or section.get("name") or model_cfg.name),
        task=task_cfg,
        data=data_cfg,
        model=model_cfg,
        optim=build_dataclass(OptimConfig, section.get("optim"), "optim"),
        train=build_dataclass(TrainConfig, section.get("train"), "train"),
    )


def expand_runs(merged: dict) -> list[RunConfig]:
    """A study's runs: each `runs:` entry merged over the shared sections; a plain recipe is one run."""
    shared = {k: v for k, v in merged.items() if k not in ("runs", "study", "description")}
    entries = merged.get("runs") or [{}]
    if not isinstance(entries, list):
        raise ConfigError("runs: expected a list of runs, each with a name and its overrides")
    runs, seen = [], set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(f"runs[{i}]: expected a mapping with name/model/... overrides")
        section = deep_merge(shared, {k: v for k, v in entry.items() if k != "name"})
        cfg = build_run_config(section, name=entry.get("name"))
        if cfg.name in seen:
            raise ConfigError(f"runs[{i}].name: {cfg.name!r} is used twice; run names must be unique")
        seen.add(cfg.name)
        runs.append(cfg)
    return runs


def run_config_from_dict(data: dict) -> RunConfig:
    """Inverse of RunConfig.to_dict (used to re-create a run from its directory)."""
    return build_run_config(data, name=data.get("name"))


def save_json(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)
