"""CYP3A4 inhibition from SMILES (the FPT study's chemistry task): is a molecule a CYP3A4 inhibitor?

    SMILES -> token ids (char | bpe | tokenizer.json), right-padded per batch with a mask -> 2 classes

Data: a CSV (data.path) such as TDC's ADME CYP3A4_Veith export (columns Drug, Y; 12,328 molecules) or
any smiles,label CSV; the seed split it by scaffold, 80/20, seed 0 (scaffold needs RDKit). A separate
held-out CSV (data.test_path) replaces the split. The tokenizer is fitted on the training molecules
only. Reports accuracy (primary, as the seed) and ROC-AUC.

The seed (dl-project) tokenized with ChemBERTa's tokenizer (give its tokenizer.json as data.tokenizer)
and fed each batch padded to its longest molecule without a mask, so the model read the last position,
usually padding. patchbench masks the padding and reads the last real token; data.padding=seed_dlproject
restores the seed's unmasked padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from patchbench.config import num
from patchbench.data.molecules import SmilesTokenizer, random_split, read_smiles_csv, scaffold_split
from patchbench.errors import ConfigError
from patchbench.registry import register_task
from patchbench.tasks.sequence import HeldOutEval, SequenceTask


@dataclass
class Cyp3a4Data(HeldOutEval):
    path: str = ""  # CSV of molecules: Drug,Y (TDC) or smiles,label
    test_path: str = ""  # a held-out CSV; "" = split data.path
    split: str = "scaffold"  # scaffold (needs RDKit) | random
    test_fraction: float = 0.2
    split_seed: int = num(0, ge=0)
    tokenizer: str = "char"  # char | bpe | path to a tokenizer.json
    vocab_size: int = num(1000, ge=3)  # bpe only
    max_len: int = num(0, ge=0)  # cut molecules to max_len tokens; 0 = keep them whole
    test_steps_per_iter: int = num(50, ge=0)  # the seed's setting
    padding: str = "mask"  # mask (hidden from attention, last real token read) | seed_dlproject (pads seen, last position read)

    def validate(self) -> None:
        self.validate_eval()
        if self.padding not in ("mask", "seed_dlproject"):
            raise ConfigError(f"data.padding: {self.padding!r}; valid: mask, seed_dlproject")
        if self.split not in ("scaffold", "random"):
            raise ConfigError(f"data.split: {self.split!r}; valid: scaffold (needs RDKit), random")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"data.test_fraction: {self.test_fraction} must be between 0 and 1 (exclusive)")
        if self.vocab_size < 3 or self.max_len < 0:
            raise ConfigError(f"data.vocab_size / data.max_len: need vocab_size >= 3 and max_len >= 0, got {self.vocab_size} "
                              f"/ {self.max_len}")


class Cyp3a4Task(SequenceTask):
    objectives = ("classification",)
    kind = "classify"
    variable_length = True

    def __init__(self, cfg):
        super().__init__(cfg)
        d = self.data
        self.mask_padding = d.padding == "mask"
        if not d.path:
            raise ConfigError("data.path: cyp3a4 needs a CSV of molecules with columns Drug,Y (TDC's ADME CYP3A4_Veith) or "
                              "smiles,label; point data.path=FILE at it")
        mols = read_smiles_csv(d.path)
        if d.test_path:
            held = read_smiles_csv(d.test_path, "data.test_path")
            train_s, train_y, test_s, test_y = mols.smiles, mols.labels, held.smiles, held.labels
            self.split_desc = f"held-out file {held.source}"
        else:
            if d.split == "scaffold":
                tr, te = scaffold_split(mols.smiles, d.test_fraction, d.split_seed)
            else:
                tr, te = random_split(len(mols.smiles), d.test_fraction, d.split_seed)
            train_s, test_s = [mols.smiles[i] for i in tr], [mols.smiles[i] for i in te]
            train_y, test_y = mols.labels[tr], mols.labels[te]
            self.split_desc = f"{d.split} split {1 - d.test_fraction:.0%}/{d.test_fraction:.0%} (seed {d.split_seed})"
        self.tokenizer = SmilesTokenizer(d.tokenizer, train_s, d.vocab_size)
        cut = d.max_len or None
        self.ids = {0: [np.asarray(self.tokenizer.encode(s)[:cut], dtype=np.int64) for s in train_s],
                    1: [np.asarray(self.tokenizer.encode(s)[:cut], dtype=np.int64) for s in test_s]}
        empty = next((s for s, x in zip(train_s + test_s, self.ids[0] + self.ids[1]) if len(x) == 0), None)
        if empty is not None:
            raise ConfigError(f"data.tokenizer: {d.tokenizer!r} turns the SMILES {empty[:40]!r} into no tokens")
        self.labels = {0: train_y, 1: test_y}
        self.num_train, self.num_test = len(train_s), len(test_s)
        self.seq_len = max(len(x) for split in self.ids.values() for x in split)
        self.source = mols.source

    def example(self, split: int, i: int) -> tuple[np.ndarray, np.int64]:
        return self.ids[split][i], self.labels[split][i]  # (n_i,) ids

    def io(self) -> dict[str, Any]:
        return {"input_kind": "discrete", "vocab_size": self.tokenizer.size, "output_dim": 2, "out_tokens": 0}

    def shorten_hint(self) -> str:
        return "cut molecules with data.max_len (or use data.tokenizer=bpe)"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "source": self.source, "split": self.split_desc, "tokenizer": self.data.tokenizer,
                "train_positive": float(self.labels[0].mean()), "test_positive": float(self.labels[1].mean())}


@register_task("cyp3a4", data_config=Cyp3a4Data, modality="sequence")
def cyp3a4(cfg) -> Cyp3a4Task:
    """CYP3A4 inhibition (binary) from SMILES tokens; scaffold or random split."""
    return Cyp3a4Task(cfg)
