"""ListOps (an FPT paper task, from kzl/universal-computation): the value 0-9 of a nested MAX / MIN /
MED / SM expression, read as a sequence of symbol ids.

    "[MAX 2 9 [MIN 4 7 ] 0 ]" -> ids over 16 symbols (0 pads) -> 10 classes

Expressions come from data/listops.py's offline generator (LRA's procedure and settings by default),
made on the fly from (data.seed, split, index). kzl read LRA's files through a TensorFlow tokenizer that
kept alphanumeric runs only, so its model never saw a closing bracket, then cut every expression to its
first 512 ids and padded to 512 with id 0, without a mask, reading out the last position (usually
padding). patchbench keeps the brackets, right-pads each batch with a mask and reads the last real
token; data.format=seed_kzl and data.padding=seed_kzl restore the seed's input. data.max_len=512 is
the seed's cut (0 = whole expressions; LRA's run to 2,000 tokens, more than GPT-2's 1,024 positions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from patchbench.data import listops, synthetic
from patchbench.errors import ConfigError
from patchbench.registry import register_task
from patchbench.tasks.sequence import HeldOutEval, SequenceTask

FORMATS = ("brackets", "seed_kzl")
PADDINGS = ("mask", "seed_kzl")


@dataclass
class ListOpsData(HeldOutEval):
    max_depth: int = 10  # LRA's settings (the FPT paper's data)
    max_args: int = 10
    min_length: int = 500  # keep expressions with min_length < tokens (brackets included) < max_length
    max_length: int = 2000
    value_p: float = 0.25  # chance that a node below max_depth is a digit
    max_len: int = 512  # cut the ids to their first max_len (kzl: 512); 0 = keep whole expressions
    format: str = "brackets"  # brackets (every symbol) | seed_kzl (closing brackets dropped, as kzl's tokenizer did)
    padding: str = "mask"  # mask (per batch, hidden from attention) | seed_kzl (always max_len ids, pads seen, last position read)
    train_size: int = 96_000  # LRA's split sizes
    test_size: int = 2_000
    test_fraction: float = 0.0  # share of the expression space held out (a hash cut); 0 = independent draws, as LRA
    seed: int = 0

    def validate(self) -> None:
        self.validate_eval()
        if self.max_depth < 1 or self.max_args < 2:
            raise ConfigError(f"data.max_depth / data.max_args: need max_depth >= 1 and max_args >= 2, "
                              f"got {self.max_depth} / {self.max_args}")
        if not 0 <= self.min_length < self.max_length - 1:
            raise ConfigError(f"data.min_length / data.max_length: need 0 <= min_length < max_length - 1 (lengths strictly between), "
                              f"got {self.min_length} / {self.max_length}")
        if not 0.0 < self.value_p <= 1.0:
            raise ConfigError(f"data.value_p: {self.value_p} must be in (0, 1]")
        if self.max_len < 0:
            raise ConfigError(f"data.max_len: must be 0 (whole expressions) or more, got {self.max_len}")
        if self.format not in FORMATS:
            raise ConfigError(f"data.format: {self.format!r}; valid: {', '.join(FORMATS)}")
        if self.padding not in PADDINGS:
            raise ConfigError(f"data.padding: {self.padding!r}; valid: {', '.join(PADDINGS)}")
        if self.padding == "seed_kzl" and not self.max_len:
            raise ConfigError("data.padding: seed_kzl pads every expression to data.max_len ids; set data.max_len (kzl: 512)")
        if self.train_size < 1 or self.test_size < 1:
            raise ConfigError(f"data.train_size / data.test_size: must be at least 1, got {self.train_size} / {self.test_size}")
        synthetic.validate_fraction(self.test_fraction)


class ListOpsTask(SequenceTask):
    objectives = ("classification",)
    kind = "classify"

    def __init__(self, cfg):
        super().__init__(cfg)
        d = self.data
        self.variable_length = d.padding == "mask"
        self.num_train, self.num_test = d.train_size, d.test_size
        self.seq_len = d.max_len or d.max_length - 1  # the longest example (ids)
        make_tokens = listops.sampler(d.max_depth, d.max_args, d.min_length, d.max_length, d.value_p)
        keep = d.format == "brackets"

        def make(rng: np.random.Generator) -> tuple[np.ndarray, np.int64]:
            tokens, value = make_tokens(rng)
            return listops.encode(tokens, keep_brackets=keep), np.int64(value)

        self.make = make

    def example(self, split: int, i: int) -> tuple[np.ndarray, np.int64]:
        d = self.data
        ids, y = synthetic.draw(self.make, d.seed, split, i, d.test_fraction, f"listops with lengths {d.min_length}-{d.max_length}")
        ids = ids[: d.max_len] if d.max_len else ids
        if d.padding == "seed_kzl":
            ids = np.pad(ids, (0, d.max_len - len(ids)), constant_values=listops.PAD_ID)  # (max_len,), no mask
        return ids, y  # (n_i,) ids, value 0-9

    def io(self) -> dict[str, Any]:
        return {"input_kind": "discrete", "vocab_size": len(listops.VOCAB), "output_dim": 10, "out_tokens": 0}

    def shorten_hint(self) -> str:
        return "cut expressions with data.max_len (kzl: 512) or lower data.max_length"

    def describe(self) -> dict[str, Any]:
        d = self.data
        return {**super().describe(), "max_depth": d.max_depth, "max_args": d.max_args, "lengths": f"{d.min_length}-{d.max_length}",
                "format": d.format, "padding": d.padding, "vocab": len(listops.VOCAB)}


@register_task("listops", data_config=ListOpsData, modality="sequence")
def listops_task(cfg) -> ListOpsTask:
    """ListOps: the value of nested MAX/MIN/MED/SM expressions over digits (generated offline, LRA settings)."""
    return ListOpsTask(cfg)
