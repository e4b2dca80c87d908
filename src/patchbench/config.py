"""Typed configs: the dataclasses of a run and the generic mapping -> dataclass coercion.

Every section of a run (task, data, model, optim, train) is a dataclass; an unknown key or a wrong
type is a `ConfigError` whose one-line message names the key and the valid choices. The model and
data sections are typed by the registry (each model family and task declares its own dataclass);
recipes, presets and overrides are resolved in recipe.py. This module imports only errors.py.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from patchbench.errors import ConfigError

__all__ = ["ConfigError", "TaskConfig", "OptimConfig", "TrainConfig", "ModelConfig", "RunConfig", "build_dataclass",
           "Range", "bounds", "num", "check_ranges"]


# --------------------------------------------------------------------------------------------------
# valid ranges, declared beside each field and checked by the generic coercion (build_dataclass)


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric field (every element of a list field). Floats must be finite."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def describe(self, integer: bool) -> str:
        parts = [f"{op} {_num(v)}" for op, v in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt)) if v is not None]
        kind = "an integer" if integer else "a finite number"
        return f"must be {kind} {' and '.join(parts)}".rstrip()

    def contains(self, v: float) -> bool:
        return ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                and (self.le is None or v <= self.le) and (self.lt is None or v < self.lt))


ANY_FINITE = Range()


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(v)


def bounds(ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None) -> dict:
    """Field metadata: `field(default_factory=..., metadata=bounds(ge=0, lt=1))`."""
    return {"range": Range(ge, gt, le, lt)}


def num(default: float, ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None) -> Any:
    """A numeric field with its valid range: `batch_size: int = num(2, ge=1)`."""
    return field(default=default, metadata=bounds(ge, gt, le, lt))


def check_ranges(obj: Any, prefix: str) -> None:
    """Every numeric field of dataclass `obj` is finite and inside its declared Range (ConfigError otherwise).
    A field without a Range only has to be finite: nan or inf configures nothing meaningful."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        rng = f.metadata.get("range", ANY_FINITE)
        value = getattr(obj, f.name)
        integer = hints.get(f.name) is int or typing.get_args(hints.get(f.name)) == (int,)
        items = list(enumerate(value)) if isinstance(value, (list, tuple)) else [(None, value)]
        for i, v in items:
            key = f"{prefix}.{f.name}" + (f"[{i}]" if i is not None else "")
            if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue  # a type error is _coerce's to report
            if not math.isfinite(v) or not rng.contains(v):
                raise ConfigError(f"{key}={v!r}: {rng.describe(integer)}")


# --------------------------------------------------------------------------------------------------
# sections shared by every run


@dataclass
class TaskConfig:
    name: str = "next_token"
    objective: str = ""  # task-specific; "" = the task's default (e.g. last_token)


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | adam | sgd
    lr: float = num(2e-4, gt=0)
    weight_decay: float = num(0.0, ge=0)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999], metadata=bounds(ge=0, lt=1))
    eps: float = num(1e-8, gt=0)
    momentum: float = num(0.9, ge=0, lt=1)  # sgd only
    schedule: str = "constant"  # constant | cosine (linear warm-up, cosine decay to min_lr)
    warmup_steps: int = num(0, ge=0)
    min_lr: float = num(0.0, ge=0)
    clip: float = num(1.0, ge=0)  # max grad norm; 0 disables
    fused: str = "auto"  # auto (fused AdamW on CUDA and CPU) | on | off

    def validate(self) -> None:
        if len(self.betas) != 2:
            raise ConfigError(f"optim.betas={self.betas}: need two numbers in [0, 1), e.g. [0.9, 0.999]")


@dataclass
class TrainConfig:
    seed: int = num(43, ge=0, lt=2**32)  # numpy's seed range
    batch_size: int = num(2, ge=1)
    accum_steps: int = num(4, ge=1)
    epochs: float = num(1.0, gt=0)
    max_steps: int = num(0, ge=0)  # optimizer steps; 0 = run the full `epochs`
    eval_every: int = num(10, ge=1)  # optimizer steps between validations
    final_metric_window: int = num(50, ge=1)  # final metric = mean of the last N validation values
    checkpoint_every: int = num(0, ge=0)  # optimizer steps; 0 = at every validation
    keep_best: bool = False  # also keep the weights of the lowest validation loss in RUN/best/
    stop_after_steps: int = num(0, ge=0)  # stop cleanly (checkpoint saved) after N steps; resume later
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto (bf16 on CUDA if supported, else fp32) | fp32 | bf16 | fp16
    compile: bool = False
    channels_last: bool = False
    deterministic: bool = True  # on CPU: bitwise-reproducible runs and resumes
    num_workers: int = num(0, ge=0)
    progress: bool = True
    sample_tokens: int = num(64, ge=0)  # tokens sampled into the report after training (text tasks)
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
        return float(value)  # finite and in range: check_ranges
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
    check_ranges(obj, prefix)
    check = getattr(obj, "validate", None)
    if check is not None:
        check()
    return obj
