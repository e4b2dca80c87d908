"""Addition of n digits (the seed's NALU-style task), as one-hot tokens or as digit images.

    digit_addition   n one-hot digits (n, 10) -> their sum
    mnist_addition   n digit images, one flattened image per token (n, H·W) -> the sum of their labels

objective: regression      one output, MSE on the standardized sum, reports MAE and MSE (primary: val_mae)
           classification  9n+1 classes (every possible sum), reports accuracy (primary) and MAE

mnist_addition needs MNIST (data.path: the IDX files). Offline stand-ins exist but are not MNIST and
are used only when chosen: data.dataset=digits (scikit-learn's 8×8 digits) or data.dataset=fashion_mnist
(the ten clothing classes read as the values 0-9). Held-out sums use only held-out images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from patchbench.data import synthetic
from patchbench.data.image_splits import load_image_splits
from patchbench.errors import ConfigError, DataMissing
from patchbench.registry import register_task
from patchbench.tasks.sequence import HeldOutEval, SequenceTask

OBJECTIVES = ("regression", "classification")


@dataclass
class DigitAdditionData(HeldOutEval):
    n: int = 10  # digits per example
    train_size: int = 1_000_000  # training examples per epoch (made on the fly)
    test_size: int = 10_000
    test_fraction: float = 0.2  # share of all digit strings that only held-out examples use; 0 = none (the seeds)
    seed: int = 0
    test_steps_per_iter: int = 50
    digit_values: int = 10  # digits drawn from 0..digit_values-1; 9 = the seed's 0..8 (randint's exclusive high)

    def validate(self) -> None:
        self.validate_eval()
        if not 2 <= self.digit_values <= 10:
            raise ConfigError(f"data.digit_values: {self.digit_values}; valid: 2 to 10 (10 = digits 0-9, 9 = the seed's 0-8)")
        if self.n < 2:
            raise ConfigError(f"data.n: must be at least 2 (one digit has nothing to add), got {self.n}")
        if self.train_size < 1 or self.test_size < 1:
            raise ConfigError(f"data.train_size / data.test_size: must be at least 1, got {self.train_size} / {self.test_size}")
        synthetic.validate_fraction(self.test_fraction)


@dataclass
class MnistAdditionData(HeldOutEval):
    dataset: str = "mnist"  # mnist (data.path: IDX files) | digits | fashion_mnist (stand-ins, not MNIST)
    path: str = ""
    download: bool = False  # let torchvision download mnist into data.path
    n: int = 10  # images per example
    train_size: int = 0  # training examples per epoch; 0 = training images // n
    test_size: int = 0  # held-out examples; 0 = held-out images // n
    seed: int = 0
    test_steps_per_iter: int = 50

    def validate(self) -> None:
        self.validate_eval()
        if self.dataset not in ("mnist", "digits", "fashion_mnist"):
            raise ConfigError(f"data.dataset: {self.dataset!r}; valid: mnist (needs data.path), digits, fashion_mnist")
        if self.n < 1:
            raise ConfigError(f"data.n: must be at least 1, got {self.n}")
        if self.train_size < 0 or self.test_size < 0:
            raise ConfigError("data.train_size / data.test_size: must be 0 (from the images) or more, "
                              f"got {self.train_size} / {self.test_size}")


class _AdditionTask(SequenceTask):
    objectives = OBJECTIVES

    def _set_objective(self, n: int, values: int = 10) -> None:
        self.n_digits = n
        if self.objective == "regression":
            self.set_kind("regress")
            mean, var = (values - 1) / 2.0, (values**2 - 1) / 12.0  # one digit uniform on 0..values-1
            self.target_mean, self.target_std = mean * n, math.sqrt(var * n)
        else:
            self.set_kind("classify")
            self.report_mae = True

    def output_dim(self) -> int:
        return 1 if self.objective == "regression" else 9 * self.n_digits + 1


class DigitAdditionTask(_AdditionTask):
    def __init__(self, cfg):
        super().__init__(cfg)
        d = self.data
        self._set_objective(d.n, d.digit_values)
        self.make = synthetic.digits(d.n, d.digit_values)
        self.num_train, self.num_test, self.seq_len = d.train_size, d.test_size, d.n

    def example(self, split: int, i: int) -> tuple[np.ndarray, np.int64]:
        d = self.data
        x, y = synthetic.draw(self.make, d.seed, split, i, d.test_fraction, f"digit_addition with n={d.n}")
        return synthetic.one_hot(x), y  # (n, 10), sum

    def io(self) -> dict[str, Any]:
        return {"input_kind": "continuous", "input_dim": 10, "output_dim": self.output_dim(), "out_tokens": 0}


class MnistAdditionTask(_AdditionTask):
    def __init__(self, cfg):
        super().__init__(cfg)
        d = self.data
        self._set_objective(d.n)
        if d.dataset == "mnist" and "fashion" in d.path.lower():
            raise ConfigError(f"data.path: {d.path!r} looks like Fashion-MNIST, not MNIST; "
                              "set data.dataset=fashion_mnist if you mean to use it as a stand-in")
        try:
            self.train, self.test, self.source = load_image_splits(d.dataset, d.path, d.download, d.seed)
        except DataMissing:
            if d.dataset != "mnist":
                raise
            raise ConfigError(
                "data.path: mnist_addition needs MNIST's IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...); "
                "point data.path=DIR at them (or data.download=true with a data.path). "
                "Offline stand-ins that are NOT MNIST, used only if you set them: data.dataset=digits (scikit-learn 8x8 digits) "
                "or data.dataset=fashion_mnist (Debian's dataset-fashion-mnist, clothing classes as 0-9)"
            ) from None
        self.images = {0: self.train, 1: self.test}
        self.token_dim = int(np.prod(self.train.images.shape[1:]))
        self.num_train = d.train_size or len(self.train.labels) // d.n
        self.num_test = d.test_size or len(self.test.labels) // d.n
        if self.num_train < 1 or self.num_test < 1:
            raise ConfigError(f"data.n: {d.n} images per example is more than the {len(self.test.labels)} held-out images of {d.dataset}")
        self.seq_len = d.n

    def example(self, split: int, i: int) -> tuple[np.ndarray, np.int64]:
        s = self.images[split]
        idx = np.random.default_rng([self.data.seed, split, i]).integers(0, len(s.labels), size=self.data.n)
        x = s.images[idx].reshape(self.data.n, -1).astype(np.float32) / 255.0  # (n, H*W*C)
        return x, np.int64(s.labels[idx].sum())

    def io(self) -> dict[str, Any]:
        return {"input_kind": "continuous", "input_dim": self.token_dim, "output_dim": self.output_dim(), "out_tokens": 0}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "source": self.source}


@register_task("digit_addition", data_config=DigitAdditionData, modality="sequence")
def digit_addition(cfg) -> DigitAdditionTask:
    """Sum of n one-hot digits (regression: MSE/MAE, or classification over the 9n+1 sums)."""
    return DigitAdditionTask(cfg)


@register_task("mnist_addition", data_config=MnistAdditionData, modality="sequence")
def mnist_addition(cfg) -> MnistAdditionTask:
    """Sum of n digit images (MNIST; digits / Fashion-MNIST stand-ins only when chosen)."""
    return MnistAdditionTask(cfg)
