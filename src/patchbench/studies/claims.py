"""A recipe's `claims:`: what the seed reported, beside what this study measured.

    claims:
      - claim: PACING reaches a lower validation loss than GPT-2 at equal size
        source: seed README, "Average of final 50 test-set loss values"
        groups: [pacing, gpt2]          # group names or axis values ({variant: fpt, task: bit_xor} or fpt-bit_xor)
        quantity: final_metric          # final_metric | samples_per_s | time_per_epoch_s | peak_bytes
        relation: lower                 # lower | higher: A against B over seeds (Welch)
                                        # ratio: mean(A) / mean(B) within tolerance of value
                                        # at_least: mean(A) >= value;  close: |mean(A) - mean(B)| <= tolerance
        claimed: "6.916 vs 8.015"
        value: 0.65                     # ratio / at_least
        tolerance: 0.1                  # ratio / close
        seed: "RTX 3070 8GB, fp32, 124M parameters, one epoch of the Sonnets"
        requires: {device: cuda}        # device (cpu | cuda), precision, or dotted config keys (data.n: 5)
        why: "..."                      # printed when a requirement is not met

Verdicts: holds | does not hold | not comparable (a requirement unmet, a group absent, or a single run).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from patchbench.config import ConfigError
from patchbench.studies.stats import welch

QUANTITIES = {"final_metric", "samples_per_s", "time_per_epoch_s", "peak_bytes"}
RELATIONS = {"lower", "higher", "ratio", "at_least", "close"}
CLAIM_KEYS = {"claim", "source", "groups", "quantity", "relation", "claimed", "value", "tolerance", "seed", "requires", "why"}


@dataclass
class ClaimRow:
    claim: str
    claimed: str
    measured: str
    verdict: str  # holds | does not hold | not comparable
    why: str


def check_claims(claims: Any) -> list[dict]:
    """Validate the `claims:` section; one-line errors naming the key."""
    if claims in (None, []):
        return []
    if not isinstance(claims, list):
        raise ConfigError("claims: expected a list of claims, each with claim, groups, quantity, relation")
    for i, c in enumerate(claims):
        where = f"claims[{i}]"
        if not isinstance(c, dict):
            raise ConfigError(f"{where}: expected a mapping with claim, groups, quantity, relation")
        unknown = set(c) - CLAIM_KEYS
        if unknown:
            raise ConfigError(f"{where}.{min(unknown)}: unknown key; valid keys: {', '.join(sorted(CLAIM_KEYS))}")
        if c.get("quantity", "final_metric") not in QUANTITIES:
            raise ConfigError(f"{where}.quantity: {c.get('quantity')!r}; valid: {', '.join(sorted(QUANTITIES))}")
        if c.get("relation") not in RELATIONS:
            raise ConfigError(f"{where}.relation: {c.get('relation')!r}; valid: {', '.join(sorted(RELATIONS))}")
        groups = c.get("groups")
        need = 1 if c["relation"] == "at_least" else 2
        if not isinstance(groups, list) or len(groups) != need:
            raise ConfigError(f"{where}.groups: expected a list of {need} group name(s) or axis mappings")
        if c["relation"] in ("ratio", "at_least") and not isinstance(c.get("value"), (int, float)):
            raise ConfigError(f"{where}.value: relation {c['relation']} needs a number")
        if c["relation"] in ("ratio", "close") and not isinstance(c.get("tolerance"), (int, float)):
            raise ConfigError(f"{where}.tolerance: relation {c['relation']} needs a number")
    return claims


def _fmt(x: float, quantity: str, digits: int = 4) -> str:
    if quantity == "peak_bytes":
        return f"{x / 2**20:,.0f} MiB"
    if quantity == "time_per_epoch_s":
        return f"{x:.1f} s"
    return f"{x:.{digits}g}"


def _config_value(cfg: dict, dotted: str) -> Any:
    cur: Any = cfg
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _device_kind(device: str) -> str:
    """'x86_64 CPU (2 threads)' -> cpu; a GPU's name -> cuda."""
    return "cpu" if "CPU" in device else "cuda"


def _unmet(requires: dict, groups: list) -> list[str]:
    """The requirements some run of the groups does not meet, in words (one per key)."""
    out = []
    for key, want in (requires or {}).items():
        for r in (r for g in groups for r in g.runs):
            if key == "device":
                have, ok = r.get("device"), _device_kind(str(r.get("device", ""))) == str(want)
            elif key == "precision":
                have = r.get("precision")
                ok = str(have).removeprefix("torch.") == str(want).removeprefix("torch.")
            else:
                have = _config_value(r["_config"], key)
                ok = have == want
            if not ok:
                out.append(f"{key}: {have} here, {want} in the seed")
                break
    return out


def evaluate_claims(claims: list[dict], find, values) -> list[ClaimRow]:
    """`find(spec)` -> the group a claim names, or None; `values(group, quantity)` -> its per-seed values."""
    rows = []
    for c in claims:
        quantity = c.get("quantity", "final_metric")
        rel = c["relation"]
        groups = [find(spec) for spec in c["groups"]]
        text = c["claim"] + (f" ({c['source']})" if c.get("source") else "")
        claimed = str(c.get("claimed", "")) + (f"; seed: {c['seed']}" if c.get("seed") else "")
        missing = [str(spec) for spec, g in zip(c["groups"], groups) if g is None]
        if missing:
            rows.append(ClaimRow(text, claimed, "-", "not comparable", f"not run in this preset: {', '.join(missing)}"))
            continue
        vals = [values(g, quantity) for g in groups]
        means = [statistics.fmean(v) for v in vals]
        measured = ", ".join(f"{g.label} {_fmt(m, quantity)}" + (f" ± {_fmt(statistics.stdev(v), quantity, 2)}" if len(v) > 1 else "")
                             for g, m, v in zip(groups, means, vals))
        why = []
        if rel in ("lower", "higher"):
            cmp = welch(vals[0], vals[1], groups[0].label, groups[1].label)
            measured += f" (difference {cmp.diff:.3g}" + ("" if cmp.single else f" ± {cmp.half_width:.2g}, p={cmp.p:.2g}") + ")"
            if cmp.single:
                verdict, why = "not comparable", ["single run, not a verdict"]
            elif cmp.significant and (cmp.diff < 0) == (rel == "lower"):
                verdict = "holds"
            else:
                verdict = "does not hold"
                why = ["no significant difference" if not cmp.significant else f"{groups[1].label} is {rel} here"]
        elif rel == "ratio":
            ratio = means[0] / means[1] if means[1] else math.nan
            measured += f"; ratio {ratio:.2f}×"
            ok = abs(ratio - c["value"]) <= c["tolerance"]
            verdict = "holds" if ok else "does not hold"
            why = [] if ok else [f"{ratio:.2f}× is outside {c['value']}× ± {c['tolerance']}"]
        elif rel == "at_least":
            verdict = "holds" if means[0] >= c["value"] else "does not hold"
            why = [] if verdict == "holds" else [f"{_fmt(means[0], quantity)} < {c['value']}"]
        else:  # close
            gap = abs(means[0] - means[1])
            verdict = "holds" if gap <= c["tolerance"] else "does not hold"
            measured += f"; gap {gap:.3g}"
            why = [] if verdict == "holds" else [f"gap {gap:.3g} > {c['tolerance']}"]
        unmet = _unmet(c.get("requires") or {}, groups)
        if unmet:
            would = [f"here it would read: {verdict}"] if verdict != "not comparable" else why
            why = unmet + ([c["why"]] if c.get("why") else []) + would
            verdict = "not comparable"
        rows.append(ClaimRow(text, claimed, measured, verdict, "; ".join(why) or "-"))
    return rows
