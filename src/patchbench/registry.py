"""name -> builder for models and tasks. `patchbench list` reads it.

    @register_model("pacing", config=PacingConfig, modality="tokens")
    def pacing(cfg: PacingConfig) -> nn.Module: ...

    model = create_model("pacing", n_embd=48)   # unset overrides (None) are ignored
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from patchbench.config import ConfigError, build_dataclass


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[[Any], Any]
    config: type
    modality: str  # what the model eats: tokens | image | sequence
    doc: str


@dataclass(frozen=True)
class TaskEntry:
    name: str
    builder: Callable[..., Any]
    data_config: type
    modality: str
    doc: str


_MODELS: dict[str, ModelEntry] = {}
_TASKS: dict[str, TaskEntry] = {}


def register_model(name: str, *, config: type, modality: str):
    def wrap(fn):
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _MODELS[name] = ModelEntry(name, fn, config, modality, doc)
        return fn

    return wrap


def register_task(name: str, *, data_config: type, modality: str):
    def wrap(fn):
        if name in _TASKS:
            raise ValueError(f"task {name!r} registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _TASKS[name] = TaskEntry(name, fn, data_config, modality, doc)
        return fn

    return wrap


def _load_builtins() -> None:
    # Importing the packages runs their @register_* decorators.
    import patchbench.models
    import patchbench.tasks  # noqa: F401


def list_models(pattern: str = "*") -> list[str]:
    _load_builtins()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def list_tasks(pattern: str = "*") -> list[str]:
    _load_builtins()
    return sorted(n for n in _TASKS if fnmatch.fnmatch(n, pattern))


def get_model(name: str) -> ModelEntry:
    _load_builtins()
    if name not in _MODELS:
        raise ConfigError(f"model.name: unknown model {name!r}; valid models: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def get_task(name: str) -> TaskEntry:
    _load_builtins()
    if name not in _TASKS:
        raise ConfigError(f"task.name: unknown task {name!r}; valid tasks: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]


def model_config(name: str, **overrides) -> Any:
    """The family's config dataclass with `overrides` applied (None values are ignored)."""
    entry = get_model(name)
    values = {k: v for k, v in overrides.items() if v is not None}
    values["name"] = name
    return build_dataclass(entry.config, values, "model")


def create_model(name_or_cfg: Any, **overrides):
    """Build a model from a registered name (plus overrides) or from a ready config dataclass."""
    if isinstance(name_or_cfg, str):
        cfg = model_config(name_or_cfg, **overrides)
    else:
        cfg = dataclasses.replace(name_or_cfg, **{k: v for k, v in overrides.items() if v is not None})
    return get_model(cfg.name).builder(cfg)
