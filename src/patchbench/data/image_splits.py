"""Train and held-out splits of the image data sets the FPT tasks cut into tokens (image_patches,
mnist_addition)."""

from __future__ import annotations

import numpy as np

from patchbench.data.images import Split, read_dataset
from patchbench.errors import ConfigError

__all__ = ["DATASETS", "DIGITS_TEST_FRACTION", "Split", "load_image_splits"]

DATASETS = ("mnist", "fashion_mnist", "cifar10", "digits")
DIGITS_TEST_FRACTION = 0.2


def load_image_splits(dataset: str, path: str, download: bool, seed: int) -> tuple[Split, Split, str]:
    """(train, held-out, description) of one image dataset; datasets without a test split get a seeded one."""
    if dataset not in DATASETS:
        raise ConfigError(f"data.dataset: {dataset!r}; valid: {', '.join(DATASETS)}")
    raw = read_dataset(dataset, path, image_size=0, download=download)
    if raw.test is not None:
        return raw.train, raw.test, raw.source
    perm = np.random.default_rng(seed).permutation(len(raw.train.labels))
    cut = int(len(perm) * DIGITS_TEST_FRACTION)
    test_idx, train_idx = np.sort(perm[:cut]), np.sort(perm[cut:])
    train = Split(raw.train.images[train_idx], raw.train.labels[train_idx])
    test = Split(raw.train.images[test_idx], raw.train.labels[test_idx])
    return train, test, f"{raw.source}, seeded {DIGITS_TEST_FRACTION:.0%} held out (seed {seed})"
