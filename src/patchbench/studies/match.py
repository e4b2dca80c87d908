"""Equal-size comparisons: pick the value of one config knob of a model family that brings its
parameter count closest to a target model's.

    patchbench match resnet18 convmixer --knob depth --set dim=512 kernel=9 patch=16
    patchbench match gpt2 pacing --knob depths.2            # a list field, indexed

Models are built on the meta device (no memory, no init cost) and counted by models.base.count_params
(every distinct tensor once, tied embeddings once, buffers excluded). The count is assumed to grow
with the knob: the search doubles the value until it passes the target, bisects, then tabulates the
neighbours. Values the family's config refuses (e.g. a width not divisible by the heads) are skipped.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from patchbench import registry
from patchbench.errors import ConfigError
from patchbench.models.base import count_params
from patchbench.recipe import deep_merge, parse_override


@dataclass
class Candidate:
    value: int
    params: int
    diff: int  # params - target

    @property
    def rel(self) -> float:
        return self.diff / max(self.params - self.diff, 1)


@dataclass
class MatchResult:
    target: str
    target_params: int
    family: str
    knob: str
    best: Candidate
    table: list[Candidate]
    fixed: dict[str, Any]

    def format(self) -> str:
        fixed = ", ".join(f"{k}={v}" for k, v in self.fixed.items())
        lines = [f"target {self.target}: {self.target_params:,} parameters",
                 f"{self.family} ({fixed}), knob {self.knob}:",
                 f"  {self.knob:>10}  {'params':>14}  {'diff':>13}  {'rel':>8}"]
        for c in self.table:
            mark = "  <- closest" if c.value == self.best.value else ""
            lines.append(f"  {c.value:>10}  {c.params:>14,}  {c.diff:>+13,}  {c.rel:>+8.2%}{mark}")
        lines.append(f"{self.knob}={self.best.value}: {self.best.params:,} parameters ({self.best.rel:+.2%} vs {self.target})")
        return "\n".join(lines)


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """['dim=512', 'depths=[3,3,7,1]'] -> {'dim': 512, 'depths': [3, 3, 7, 1]} (values read as YAML)."""
    out: dict[str, Any] = {}
    for text in items or []:
        out = deep_merge(out, parse_override(text, "--set", "dim=512"))
    return out


def model_values(name: str, sets: dict[str, Any]) -> dict[str, Any]:
    """The family's full config as a mapping, with `sets` applied and validated."""
    return dataclasses.asdict(registry.model_config(name, **sets))


def with_knob(values: dict[str, Any], knob: str, value: int) -> dict[str, Any]:
    """Set `knob` ('depth', or 'depths.2' for an entry of a list field) to `value` in a copy of values."""
    field, *index = knob.split(".")
    if field not in values or field == "name":
        valid = ", ".join(k for k in values if k != "name")
        raise ConfigError(f"--knob {knob!r}: {values.get('name')} has no field {field!r}; valid fields: {valid}")
    out = copy.deepcopy(values)
    if not index:
        if isinstance(out[field], (list, dict)) or not isinstance(out[field], int) or isinstance(out[field], bool):
            raise ConfigError(f"--knob {knob!r}: {field} is {out[field]!r}, not an integer; index a list with {field}.N")
        out[field] = value
        return out
    target = out[field]
    for part in index[:-1]:
        target = _index(target, part, knob)
    last = index[-1]
    _index(target, last, knob)
    target[int(last)] = value
    return out


def _index(container: Any, part: str, knob: str) -> Any:
    if not isinstance(container, list) or not part.isdigit() or int(part) >= len(container):
        size = len(container) if isinstance(container, list) else 0
        raise ConfigError(f"--knob {knob!r}: {part!r} is not an index of a list of {size} entries")
    return container[int(part)]


def count_on_meta(name: str, values: dict[str, Any]) -> int:
    cfg = registry.model_config(name, **{k: v for k, v in values.items() if k != "name"})
    with torch.device("meta"):
        model = registry.create_model(cfg)
    return count_params(model)["total"]


def match(target: str, family: str, knob: str, family_sets: list[str] | None = None, target_sets: list[str] | None = None,
          num_classes: int | None = None, values: list[int] | None = None, step: int = 1, window: int = 3,
          max_value: int = 1 << 16) -> MatchResult:
    """The knob value of `family` whose parameter count is closest to `target`'s."""
    if step < 1:
        raise ConfigError(f"--step: must be at least 1, got {step}")
    t_sets, f_sets = parse_sets(target_sets), parse_sets(family_sets)
    t_values, f_values = model_values(target, t_sets), model_values(family, f_sets)
    if num_classes is not None:  # the same classifier on both sides, where the family has one
        for vals in (t_values, f_values):
            if "num_classes" in vals:
                vals["num_classes"] = num_classes
    goal = count_on_meta(target, t_values)
    with_knob(f_values, knob, step)  # refuses an unknown or non-integer knob up front

    cache: dict[int, int | None] = {}

    def params(v: int) -> int | None:
        if v not in cache:
            try:
                cache[v] = count_on_meta(family, with_knob(f_values, knob, v))
            except ConfigError:
                cache[v] = None  # a value the config refuses
        return cache[v]

    if values:
        for v in values:
            params(v)
    else:
        lo, hi = step, step  # double until the count passes the goal, then bisect [lo, hi]
        while hi <= max_value and (params(hi) is None or params(hi) < goal):
            lo, hi = hi, hi * 2
        hi = min(hi, max_value)
        while hi - lo > step:
            mid = lo + ((hi - lo) // (2 * step)) * step
            if mid == lo:
                break
            p = params(mid)
            if p is not None and p >= goal:
                hi = mid
            else:
                lo = mid
        for v in range(max(step, lo - window * step), hi + window * step + 1, step):
            params(v)
    table = [Candidate(v, p, p - goal) for v, p in sorted(cache.items()) if p is not None]
    if not table:
        raise ConfigError(f"--knob {knob!r}: no value gave a valid {family} config; adjust --set or --step")
    best = min(table, key=lambda c: (abs(c.diff), c.value))
    near = sorted(table, key=lambda c: abs(c.value - best.value))[: 2 * window + 1]
    fixed = {k: v for k, v in f_values.items() if k in f_sets or (k == "num_classes" and num_classes is not None)}
    return MatchResult(target, goal, family, knob, best, sorted(near, key=lambda c: c.value), fixed)
