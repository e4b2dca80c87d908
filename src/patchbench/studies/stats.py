"""Verdicts over seeds: the difference of two groups' final metrics with a 95% Welch confidence interval.

Welch's t-test (unequal variances): se = sqrt(s_a²/n_a + s_b²/n_b), Welch–Satterthwaite degrees of freedom,
p two-sided (scipy.stats.ttest_ind with equal_var=False). With one run on either side there is no
variance to test against: the sentence says so instead of pretending to a verdict.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

ALPHA = 0.05


@dataclass
class Comparison:
    a: str  # the labels, as the sentence names them
    b: str
    diff: float  # mean(a) - mean(b)
    half_width: float  # of the 95% CI; nan with a single run on either side
    p: float  # two-sided; nan with a single run
    n_a: int
    n_b: int
    df: float

    @property
    def single(self) -> bool:
        return min(self.n_a, self.n_b) < 2

    @property
    def significant(self) -> bool:
        return not self.single and self.p < ALPHA

    @property
    def ci(self) -> tuple[float, float]:
        return self.diff - self.half_width, self.diff + self.half_width


def welch(a: list[float], b: list[float], label_a: str = "A", label_b: str = "B") -> Comparison:
    """mean(a) - mean(b), the 95% Welch CI half-width and the two-sided p-value."""
    from scipy import stats

    a, b = [float(x) for x in a], [float(x) for x in b]
    if not a or not b:
        raise ValueError("welch: both groups need at least one value")
    diff = statistics.fmean(a) - statistics.fmean(b)
    n_a, n_b = len(a), len(b)
    if min(n_a, n_b) < 2:
        return Comparison(label_a, label_b, diff, math.nan, math.nan, n_a, n_b, math.nan)
    va, vb = statistics.variance(a) / n_a, statistics.variance(b) / n_b
    se = math.sqrt(va + vb)
    if se == 0.0:  # every seed identical on both sides: no spread to test against
        p = 1.0 if diff == 0.0 else 0.0
        return Comparison(label_a, label_b, diff, 0.0, p, n_a, n_b, float(n_a + n_b - 2))
    df = (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1))
    half = float(stats.t.ppf(1 - ALPHA / 2, df)) * se
    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return Comparison(label_a, label_b, diff, half, p, n_a, n_b, df)


def _decimals(width: float) -> int:
    """Decimals that show two significant figures of `width` (the CI half-width)."""
    if width <= 0 or not math.isfinite(width):
        return 3
    return min(max(1 - math.floor(math.log10(width)), 0), 6)


def _num(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}"


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}" if p < 0.01 else f"p={p:.2f}"


def sentence(c: Comparison, metric: str, higher_is_better: bool) -> str:
    """One line a reader can cite: who is better, by how much, with what confidence."""
    n = f"n={c.n_a}" if c.n_a == c.n_b else f"n={c.n_a} vs {c.n_b}"
    d = _decimals(c.half_width if not c.single else abs(c.diff))
    if c.single:
        return f"{c.a} vs {c.b} ({metric}): {_num(abs(c.diff), d)} apart; single run, not a verdict ({n})."
    if not c.significant:
        return (f"{c.a} vs {c.b} ({metric}): no significant difference ({n}; difference {_num(c.diff, d)} ± {_num(c.half_width, d)}, "
                f"{_p(c.p)}).")
    a_better = (c.diff > 0) == higher_is_better
    winner, loser = (c.a, c.b) if a_better else (c.b, c.a)
    word = "higher" if higher_is_better else "lower"
    return f"{winner} reaches {word} {metric} than {loser} by {_num(abs(c.diff), d)} ± {_num(c.half_width, d)} ({n}, {_p(c.p)})."
