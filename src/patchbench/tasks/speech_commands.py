"""Speech Commands keyword spotting from the raw waveform (the FPT study's speech task).

    clip (16 kHz) -> 8 kHz, one second, zero-padded -> (8000 / 80, 80): 100 tokens of 80 samples -> word

Data: a Speech Commands folder (data.path; see data/speech.py), real or made by
`patchbench data speech-synth DIR`. Training clips are those in neither list; the held-out clips are
testing_list.txt (data.eval_split=validation scores validation_list.txt instead). Clips are read from
disk per batch (train.num_workers loader processes read them in parallel).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from patchbench.config import num
from patchbench.data.speech import load_clip, read_folder
from patchbench.errors import ConfigError
from patchbench.registry import register_task
from patchbench.tasks.sequence import HeldOutEval, SequenceTask


@dataclass
class SpeechCommandsData(HeldOutEval):
    path: str = ""  # the Speech Commands folder (WORD/*.wav, validation_list.txt, testing_list.txt)
    words: list[str] = field(default_factory=list)  # [] = every word folder (35 in v0.02)
    sample_rate: int = num(8000, ge=1)  # Hz after resampling (the seed's 8 kHz)
    seconds: float = num(1.0, gt=0)  # clip length; shorter clips are zero-padded, longer ones cut
    patch_size: int = num(80, ge=1)  # samples per token
    eval_split: str = "testing"  # testing | validation
    train_limit: int = num(0, ge=0)  # use at most N training clips (seeded subset); 0 = all
    seed: int = num(0, ge=0)
    test_steps_per_iter: int = num(25, ge=0)  # the seed's speech setting

    def validate(self) -> None:
        self.validate_eval()
        if self.eval_split not in ("testing", "validation"):
            raise ConfigError(f"data.eval_split: {self.eval_split!r}; valid: testing, validation")
        if self.sample_rate < 1000 or self.seconds <= 0:
            raise ConfigError(f"data.sample_rate / data.seconds: {self.sample_rate} Hz × {self.seconds} s; need at least "
                              "1000 Hz and a positive length")
        samples = round(self.sample_rate * self.seconds)
        if self.patch_size < 1 or samples % self.patch_size:
            valid = [p for p in (10, 16, 20, 25, 40, 50, 80, 100, 160, 200, 400) if samples % p == 0]
            raise ConfigError(f"data.patch_size: {self.patch_size} does not divide the {samples} samples of a clip "
                              f"({self.sample_rate} Hz × {self.seconds} s); e.g. {', '.join(map(str, valid))}")


class SpeechCommandsTask(SequenceTask):
    objectives = ("classification",)
    kind = "classify"

    def __init__(self, cfg):
        super().__init__(cfg)
        d = self.data
        self.folder = read_folder(d.path, d.words or None)
        self.train = self.folder.files["training"]
        if d.train_limit and d.train_limit < len(self.train):
            keep = np.sort(np.random.default_rng(d.seed).permutation(len(self.train))[: d.train_limit])
            self.train = [self.train[i] for i in keep]
        self.test = self.folder.files[d.eval_split]
        self.samples = round(d.sample_rate * d.seconds)
        self.num_train, self.num_test = len(self.train), len(self.test)
        self.seq_len = self.samples // d.patch_size

    def example(self, split: int, i: int) -> tuple[np.ndarray, int]:
        path, label = (self.train if split == 0 else self.test)[i]
        x = load_clip(path, self.data.sample_rate, self.samples)  # (samples,)
        return x.reshape(self.seq_len, self.data.patch_size), label  # (N, p)

    def io(self) -> dict[str, Any]:
        p = self.data.patch_size
        return {"input_kind": "continuous", "input_dim": p, "output_dim": len(self.folder.words), "out_tokens": 0}

    def shorten_hint(self) -> str:
        return "use a larger data.patch_size"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "folder": str(self.folder.root), "words": len(self.folder.words),
                "sample_rate": self.data.sample_rate, "eval_split": self.data.eval_split}


@register_task("speech_commands", data_config=SpeechCommandsData, modality="sequence")
def speech_commands(cfg) -> SpeechCommandsTask:
    """Speech Commands words from raw 8 kHz waveform patches (a real or espeak-ng synthetic folder)."""
    return SpeechCommandsTask(cfg)
