"""Synthetic sequence data of the FPT study: Bit-XOR, Bit-Memory and digit addition.

Example i of a split is drawn from a generator seeded by (seed, split, i), so the data set is a pure
function of its config: any example can be made again, in any order, in any worker, after a resume.

Held-out data never repeats a training input: the input space is cut in two by a hash of the
input's content (a fixed `test_fraction` of all possible inputs is test-only), and each split draws
only inputs on its own side. The seed drew train and test batches from the same distribution, so for
small inputs (Bit-XOR with 5 bits has 1,024 possible inputs) its test batches repeated training inputs.
test_fraction = 0 restores that: both splits draw from the whole input space (independent streams).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np

from patchbench.errors import ConfigError

TRAIN, TEST = 0, 1
MAX_TRIES = 256  # draws per example before the held-out cut is declared impossible


def test_side(x: np.ndarray, fraction: float) -> bool:
    """True when input `x` belongs to the held-out part of the input space."""
    digest = hashlib.blake2b(np.ascontiguousarray(x).tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64 < fraction


def validate_fraction(fraction: float, key: str = "data.test_fraction") -> None:
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"{key}: {fraction} must be in [0, 1); 0 = no held-out part of the input space "
                          "(train and test drawn from all of it, as the seeds did)")


def draw(make: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]], seed: int, split: int, index: int,
         fraction: float, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Example `index` of `split`: the first draw of `make` whose input lies on the split's side."""
    rng = np.random.default_rng([seed, split, index])
    if fraction <= 0.0:  # the seeds: no held-out cut
        return make(rng)
    for _ in range(MAX_TRIES):
        x, y = make(rng)
        if test_side(x, fraction) == (split == TEST):
            return x, y
    raise ConfigError(f"data: {what} has too few distinct inputs to hold out data.test_fraction={fraction} of them; make the "
                      "inputs longer or change data.test_fraction")


def bit_xor(n: int, patterns: int) -> Callable:
    """x: (patterns, n) bits in {0, 1}; y: (n,) their XOR (universal-computation's BitXORDataset)."""
    def make(rng: np.random.Generator):
        x = rng.integers(0, 2, size=(patterns, n), dtype=np.int8)
        return x, np.bitwise_xor.reduce(x, axis=0).astype(np.int64)
    return make


def bit_memory(n: int, patterns: int) -> Callable:
    """x: (patterns + 1, n) in {-1, +1}: `patterns` patterns, then one of them with each bit masked to 0
    with probability 1/2; y: (n,) the queried pattern as {0, 1} (universal-computation's BitMemoryDataset)."""
    def make(rng: np.random.Generator):
        bits = 2 * rng.integers(0, 2, size=(patterns, n), dtype=np.int8) - 1
        query = bits[rng.integers(0, patterns)]
        masked = query * rng.integers(0, 2, size=n, dtype=np.int8)
        return np.concatenate([bits, masked[None]], axis=0), (query > 0).astype(np.int64)
    return make


def digits(n: int, values: int = 10) -> Callable:
    """x: (n,) digits 0..values-1; y: their sum. The seed (dl-project's nalu.py) drew 0..8 only, as
    np.random.randint's high is exclusive: values=9 restores that (the one-hot width stays 10)."""
    def make(rng: np.random.Generator):
        x = rng.integers(0, values, size=n, dtype=np.int8)
        return x, np.int64(x.sum())
    return make


def one_hot(x: np.ndarray, classes: int = 10) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[x]  # (..., classes)
