"""Shared fixtures: a small real text corpus and an isolated token cache."""

from __future__ import annotations

import random

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PATCHBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def corpus(tmp_path):
    """~40 KB of pseudo-verse with real structure (deterministic), as a .txt file."""
    rng = random.Random(0)
    words = ("love thee fair heart time night beauty eyes sweet death king lord sir good thou art with thy self mine hath doth "
             "shall will what when where now then so not no yes").split()
    lines = []
    for i in range(900):
        n = rng.randint(5, 9)
        lines.append(" ".join(rng.choice(words) for _ in range(n)).capitalize() + rng.choice([",", ".", ";", "!"]))
        if i % 14 == 13:
            lines.append("")
    path = tmp_path / "verse.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_text_recipe(corpus, **extra) -> dict:
    """A two-model next-token study at test size (dict form of a recipe)."""
    recipe = {
        "task": {"name": "next_token"},
        "data": {"corpus": str(corpus), "tokenizer": "bpe", "vocab_size": 300, "context": 16, "stride": 4, "val_windows": 8},
        "optim": {"name": "adamw", "lr": 3e-3},
        "train": {"batch_size": 4, "accum_steps": 2, "max_steps": 12, "eval_every": 3, "final_metric_window": 2,
                  "progress": False, "sample_tokens": 8},
        "runs": [
            {"name": "pacing", "model": {"name": "pacing", "vocab_size": 0, "n_positions": 16, "patch": 8,
                                          "depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64], "readout_channels": 1}},
            {"name": "gpt2", "model": {"name": "gpt2", "vocab_size": 0, "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 16}},
        ],
    }
    for k, v in extra.items():
        recipe[k] = v
    return recipe
