"""Molecules as SMILES strings: a labelled CSV, a scaffold or random split, and tokenizers.

CSV: one molecule per row with a SMILES column and a binary label column, named as TDC exports them
(`Drug`, `Y`; e.g. ADME CYP3A4_Veith) or `smiles`, `label` (any letter case).

Splits (train / held-out):
    scaffold  molecules grouped by Bemis-Murcko scaffold (RDKit), whole groups assigned: the larger
              groups first in seeded random order, then the small ones (chemprop's balanced scaffold
              split, which TDC's scaffold split follows); held-out molecules share no scaffold with
              training ones. Needs RDKit; there is no substitute for it here.
    random    a seeded permutation.

Tokenizers: char (one id per character), bpe (byte-pair merges learned on the training SMILES with the
`tokenizers` library), or a tokenizer.json file (e.g. a chemistry BPE such as ChemBERTa's). Id 0 is
padding for char and bpe.
"""

from __future__ import annotations

import csv
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from patchbench.errors import ConfigError

SMILES_COLUMNS = ("drug", "smiles")
LABEL_COLUMNS = ("y", "label")
PAD, UNK = "[PAD]", "[UNK]"


@dataclass
class Molecules:
    smiles: list[str]
    labels: np.ndarray  # int64 (N,) in {0, 1}
    source: str


def read_smiles_csv(path: str, key: str = "data.path") -> Molecules:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{key}: {str(p)!r} is not a file; give a CSV of molecules with columns Drug,Y (TDC) or smiles,label")
    try:
        with open(p, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ConfigError(f"{key}: {p} cannot be read as CSV ({type(e).__name__}: {str(e)[:80]})") from None
    if not header:
        raise ConfigError(f"{key}: {p} is empty; expected a header with Drug,Y (TDC) or smiles,label")
    lower = [h.strip().lower() for h in header]
    s_col = next((lower.index(c) for c in SMILES_COLUMNS if c in lower), None)
    y_col = next((lower.index(c) for c in LABEL_COLUMNS if c in lower), None)
    if s_col is None or y_col is None:
        raise ConfigError(f"{key}: {p} has columns {', '.join(h.strip() for h in header)}; expected Drug,Y (TDC) or smiles,label")
    smiles, labels = [], []
    for i, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(s_col, y_col):
            raise ConfigError(f"{key}: {p} line {i} has {len(row)} fields; the header has {len(header)}")
        s, raw = row[s_col].strip(), row[y_col].strip().lower()
        if not s:
            raise ConfigError(f"{key}: {p} line {i} has an empty SMILES")
        value = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "false": 0, "true": 1}.get(raw)
        if value is None:
            raise ConfigError(f"{key}: {p} line {i} has label {row[y_col].strip()!r}; labels must be 0 or 1")
        smiles.append(s)
        labels.append(value)
    if len(smiles) < 2:
        raise ConfigError(f"{key}: {p} holds {len(smiles)} molecule(s); need at least 2")
    return Molecules(smiles, np.asarray(labels, dtype=np.int64), str(p))


def random_split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    cut = max(1, round(n * test_fraction))
    return np.sort(perm[cut:]), np.sort(perm[:cut])


def scaffold_split(smiles: list[str], test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices; no Bemis-Murcko scaffold is in both."""
    try:
        from rdkit import Chem, RDLogger
        from rdkit.Chem.Scaffolds import MurckoScaffold
    except ImportError:
        raise ConfigError("data.split: scaffold needs RDKit (pip install rdkit); or set data.split=random") from None
    RDLogger.DisableLog("rdApp.*")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(smiles):
        mol = Chem.MolFromSmiles(s)
        if mol is None:
            raise ConfigError(f"data.path: molecule {i + 1} ({s[:40]!r}) is not a SMILES RDKit can parse; fix or drop it, or "
                              "use data.split=random")
        groups[MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)].append(i)
    n = len(smiles)
    n_test = max(1, round(n * test_fraction))
    sets = list(groups.values())
    big = [g for g in sets if len(g) > n_test / 2]
    small = [g for g in sets if len(g) <= n_test / 2]
    rng = random.Random(seed)
    rng.shuffle(big)
    rng.shuffle(small)
    train: list[int] = []
    test: list[int] = []
    for g in big + small:
        (train if len(train) + len(g) <= n - n_test else test).extend(g)
    if not train or not test:
        raise ConfigError(f"data.split: the {len(sets)} scaffold(s) of these {n} molecules cannot be cut into training and "
                          "held-out sets; use data.split=random")
    return np.asarray(sorted(train)), np.asarray(sorted(test))


class SmilesTokenizer:
    """SMILES -> ids; id 0 is padding. kind: char | bpe | a tokenizer.json path."""

    def __init__(self, kind: str, train_smiles: list[str], vocab_size: int):
        self.kind = kind
        if kind == "char":
            chars = sorted({c for s in train_smiles for c in s})
            self.vocab = {PAD: 0, UNK: 1, **{c: i + 2 for i, c in enumerate(chars)}}
            self.size = len(self.vocab)
            return
        from tokenizers import Tokenizer, models, trainers

        if kind == "bpe":
            tok = Tokenizer(models.BPE(unk_token=UNK))  # no pre-tokenizer: a SMILES is one word
            trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, UNK], show_progress=False)
            tok.train_from_iterator(train_smiles, trainer=trainer)
        else:
            path = Path(kind).expanduser()
            if not path.is_file():
                raise ConfigError(f"data.tokenizer: {kind!r}; valid: char, bpe, or a tokenizer.json file")
            try:
                tok = Tokenizer.from_file(str(path))
            except Exception as e:  # noqa: BLE001 - tokenizers raises its own exception type
                raise ConfigError(f"data.tokenizer: {path} is not a tokenizers JSON file ({str(e)[:80]})") from None
            tok.no_padding()
            tok.no_truncation()
        self.tok = tok
        self.size = tok.get_vocab_size()

    def encode(self, s: str) -> list[int]:
        if self.kind == "char":
            return [self.vocab.get(c, 1) for c in s]
        return self.tok.encode(s).ids
