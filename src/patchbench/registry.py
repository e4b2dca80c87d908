"""name -> builder for models and tasks. `patchbench list` reads it.

The registry imports no model or task: each module registers itself when its package is imported,
as timm's do; `import patchbench` imports the packages of the built-in ones.

    @register_model("pacing", config=PacingConfig, modality="tokens")
    def pacing(cfg: PacingConfig) -> nn.Module: ...

    model = create_model("pacing", n_embd=48)   # unset overrides (None) are ignored

    register_variant("vit24_linear", "vit", patch=24, patch_embed="linear", ...)   # a named preset of a family
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from patchbench.config import build_dataclass
from patchbench.errors import ConfigError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[[Any], Any]
    config: type
    modality: str  # what the model eats: tokens | image | sequence
    doc: str
    family: str = ""  # a variant's family (vit24_linear -> vit); "" for a family itself
    defaults: dict = field(default_factory=dict)  # a variant's config values (under the user's)

    @property
    def base(self) -> str:
        return self.family or self.name


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


def register_variant(name: str, family: str, doc: str = "", **defaults: Any) -> None:
    """A named configuration of a registered family (as timm registers vit_base_patch16_224 for ViT)."""
    if name in _MODELS:
        raise ValueError(f"model {name!r} registered twice")
    base = _MODELS[family]
    build_dataclass(base.config, {**defaults, "name": family}, f"variant {name}")  # its values must be valid
    _MODELS[name] = ModelEntry(name, base.builder, base.config, base.modality, doc or f"{family} with {_fmt(defaults)}", family, defaults)


def _fmt(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def register_task(name: str, *, data_config: type, modality: str):
    def wrap(fn):
        if name in _TASKS:
            raise ValueError(f"task {name!r} registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _TASKS[name] = TaskEntry(name, fn, data_config, modality, doc)
        return fn

    return wrap


def list_models(pattern: str = "*", variants: bool = True) -> list[str]:
    """Registered names matching `pattern`; variants=False: the families only."""
    return sorted(n for n, e in _MODELS.items() if fnmatch.fnmatch(n, pattern) and (variants or not e.family))


def list_tasks(pattern: str = "*") -> list[str]:
    return sorted(n for n in _TASKS if fnmatch.fnmatch(n, pattern))


def get_model(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise ConfigError(f"model.name: unknown model {name!r}; valid models: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def get_task(name: str) -> TaskEntry:
    if name not in _TASKS:
        raise ConfigError(f"task.name: unknown task {name!r}; valid tasks: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]


def build_model_config(raw: dict, prefix: str = "model") -> Any:
    """A model section {name, key: value, ...} -> the family's config dataclass, a variant's values under
    the given ones."""
    entry = get_model(raw.get("name"))
    return build_dataclass(entry.config, {**entry.defaults, **raw}, prefix)


def model_config(name: str, **overrides) -> Any:
    """The family's config dataclass with `overrides` applied (None values are ignored)."""
    values = {k: v for k, v in overrides.items() if v is not None}
    return build_model_config({**values, "name": name})


def create_model(name_or_cfg: Any, **overrides):
    """Build a model from a registered name (plus overrides) or from a ready config dataclass."""
    if isinstance(name_or_cfg, str):
        cfg = model_config(name_or_cfg, **overrides)
    else:
        cfg = dataclasses.replace(name_or_cfg, **{k: v for k, v in overrides.items() if v is not None})
    return get_model(cfg.name).builder(cfg)
