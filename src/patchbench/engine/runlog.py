"""One log of a run: metrics.jsonl, TensorBoard and the progress bar, written together.

Only the main rank logs; on the other ranks every method is a no-op, so the loop needs no `if`.
"""

from __future__ import annotations

import sys

from patchbench.durable import dumps_strict
from patchbench.rundir import RunDir

TB_TAGS = {"train_loss": "Loss/train", "val_loss": "Loss/validation", "val_accuracy": "Accuracy/Test", "lr": "LearningRate"}


class RunLog:
    def __init__(self, run: RunDir, name: str, history: list[dict], start_step: int, total_steps: int,
                 resume: bool, enabled: bool, progress: bool):
        self.enabled = enabled
        self.metrics = self.writer = self.bar = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        self.metrics = run.open_metrics(history)  # rewritten up to the resume point
        self.writer = SummaryWriter(str(run.tb_dir), purge_step=start_step if resume else None)
        self.writer.add_custom_scalars({"Loss": {"train vs validation": ["Multiline", ["Loss/train", "Loss/validation"]]}})
        if progress:
            tty = sys.stderr.isatty()  # in a log file, redraw rarely instead of every step
            self.bar = tqdm(total=total_steps, initial=start_step, desc=name, unit="step", dynamic_ncols=True,
                            mininterval=0.2 if tty else 30.0)

    def tick(self) -> None:
        """One optimizer step done."""
        if self.bar is not None:
            self.bar.update(1)

    def write(self, rows: list[dict], **postfix: str) -> None:
        """Rows of {"step", metric: value, ...} to metrics.jsonl and TensorBoard; postfix to the bar."""
        if not self.enabled:
            return
        for r in rows:
            self.metrics.write(dumps_strict(r) + "\n")  # strict JSON: a NaN loss is written as null
            for k, v in r.items():
                if k != "step":
                    self.writer.add_scalar(TB_TAGS.get(k, k), v, r["step"])
        self.metrics.flush()
        if self.bar is not None:
            self.bar.set_postfix(**postfix)

    def text(self, tag: str, text: str, step: int) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text, step)

    def close_progress(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None

    def close(self) -> None:
        self.close_progress()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
