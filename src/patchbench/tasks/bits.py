"""Bit-XOR and Bit-Memory (the FPT paper's synthetic tasks), as universal-computation generates them.

    bit_xor     `patterns` strings of n bits in {0, 1}; predict their bitwise XOR.
    bit_memory  `patterns` strings of n bits in {-1, +1}, then one of them again with each bit masked
                to 0 with probability 1/2; predict the whole remembered string.

Each string is cut into tokens of patch_size bits: (patterns [+1], n) -> (tokens, patch_size). The
model reads the last n / patch_size tokens, each predicting 2 logits per bit of its patch:
(B, n/p, 2p) -> (B, n, 2), trained with cross-entropy (kzl's loss, data.loss=ce). data.loss=bce_per_bit
is dl-project's: one logit per bit, (B, n/p, p) -> (B, n), binary cross-entropy with logits, a bit
predicted 1 when its logit is positive. Accuracy is per bit. Examples are made on the fly from
(data.seed, split, index); held-out inputs are a fixed hash-defined part of the input space (see
data/synthetic.py); data.test_fraction=0 draws both splits from the whole input space, as the seeds did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from patchbench.data import synthetic
from patchbench.errors import ConfigError
from patchbench.registry import register_task
from patchbench.tasks.sequence import HeldOutEval, SequenceTask

BIT_LOSSES = ("ce", "bce_per_bit")


@dataclass
class BitXorData(HeldOutEval):
    n: int = 5  # bits per string
    patterns: int = 2  # strings XORed together
    patch_size: int = 5  # bits per token; must divide n
    train_size: int = 1_000_000  # training examples per epoch (made on the fly)
    test_size: int = 10_000  # held-out examples
    test_fraction: float = 0.2  # share of the input space that only held-out examples use; 0 = none (the seeds)
    seed: int = 0  # data seed (the same data for every train.seed)
    loss: str = "ce"  # ce (2 logits per bit, kzl) | bce_per_bit (1 logit per bit, dl-project)

    def validate(self) -> None:
        validate_bits(self, min_patterns=2)


@dataclass
class BitMemoryData(HeldOutEval):
    n: int = 1000  # bits per string
    patterns: int = 5  # strings to remember
    patch_size: int = 50  # bits per token; must divide n
    train_size: int = 1_000_000
    test_size: int = 10_000
    test_fraction: float = 0.2  # 0 = no held-out part of the input space (the seeds)
    seed: int = 0
    loss: str = "ce"  # ce (2 logits per bit, kzl) | bce_per_bit (1 logit per bit)

    def validate(self) -> None:
        validate_bits(self, min_patterns=1)


def validate_bits(d, min_patterns: int) -> None:
    d.validate_eval()
    if d.n < 1:
        raise ConfigError(f"data.n: must be at least 1, got {d.n}")
    if d.patterns < min_patterns:
        raise ConfigError(f"data.patterns: must be at least {min_patterns}, got {d.patterns}")
    if d.patch_size < 1 or d.n % d.patch_size:
        valid = [p for p in range(1, d.n + 1) if d.n % p == 0]
        raise ConfigError(f"data.patch_size: {d.patch_size} does not divide data.n={d.n}; "
                          f"valid patch sizes: {', '.join(map(str, valid[:12]))}")
    if d.train_size < 1 or d.test_size < 1:
        raise ConfigError(f"data.train_size / data.test_size: must be at least 1, got {d.train_size} / {d.test_size}")
    synthetic.validate_fraction(d.test_fraction)
    if d.loss not in BIT_LOSSES:
        raise ConfigError(f"data.loss: {d.loss!r}; valid: {', '.join(BIT_LOSSES)}")


class BitsTask(SequenceTask):
    objectives = ("classification",)
    kind = "bits"

    def __init__(self, cfg, memory: bool):
        super().__init__(cfg)
        d = self.data
        self.memory = memory
        self.bit_logits = 1 if d.loss == "bce_per_bit" else 2
        self.make = synthetic.bit_memory(d.n, d.patterns) if memory else synthetic.bit_xor(d.n, d.patterns)
        self.num_train, self.num_test, self.n_bits = d.train_size, d.test_size, d.n
        self.seq_len = (d.patterns + memory) * d.n // d.patch_size

    def example(self, split: int, i: int) -> tuple[np.ndarray, np.ndarray]:
        d = self.data
        x, y = synthetic.draw(self.make, d.seed, split, i, d.test_fraction, f"{self.cfg.task.name} with n={d.n}, patterns={d.patterns}")
        return x.astype(np.float32).reshape(self.seq_len, d.patch_size), y  # (tokens, p), (n,)

    def io(self) -> dict[str, Any]:
        p = self.data.patch_size
        return {"input_kind": "continuous", "input_dim": p, "output_dim": self.bit_logits * p, "out_tokens": self.data.n // p}

    def shorten_hint(self) -> str:
        return "use a larger data.patch_size"


@register_task("bit_xor", data_config=BitXorData, modality="sequence")
def bit_xor(cfg) -> BitsTask:
    """Bit-XOR: predict the bitwise XOR of bit strings (patches of bits as tokens)."""
    return BitsTask(cfg, memory=False)


@register_task("bit_memory", data_config=BitMemoryData, modality="sequence")
def bit_memory(cfg) -> BitsTask:
    """Bit-Memory: recall a whole bit string from a half-masked copy (patches of bits as tokens)."""
    return BitsTask(cfg, memory=True)
