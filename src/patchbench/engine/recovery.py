"""What `train` does with the folder it is given before it trains, and after a loss turns non-finite:
the run-level half of crash consistency (the file level is durable.py, the layout rundir.py).

    claim(run, resume)           lock the folder for this process, remove temporaries, refuse a folder that
                                 is not a run, refuse to overwrite a run without --resume, start over where
                                 no checkpoint verifies
    resume_point(run)            the newest checkpoint that verifies, saying which newer ones were skipped
    config_changes(old, new)     the dotted keys whose values differ between a checkpoint's config and this one
    check_changes(...)           refuse them, or record what --allow-changes accepted in RUN/changes.jsonl
    set_aside_diverged(run, s)   after a non-finite loss at step s: no checkpoint from s-1 on stays resumable
"""

from __future__ import annotations

import shutil
import time
from typing import Any

from patchbench.durable import FolderLock
from patchbench.errors import CheckpointError, ConfigError
from patchbench.rundir import STEP_DIR, RunDir

# Keys a resume may change without --allow-changes: they do not change what is computed.
RESUMABLE_KEYS = {"train.progress", "train.stop_after_steps", "train.device", "train.num_workers", "train.compile",
                  "train.sample_tokens", "train.sample_prompt", "train.sample_method"}


def claim(run: RunDir, resume: bool, name: str) -> FolderLock:
    """Lock `run` for this process and leave it ready to train into; returns the held lock."""
    run.claim()
    lock = run.lock()
    try:
        run.remove_temporaries()
        if resume:
            return lock
        if run.is_finished() or run.latest_checkpoint() is not None:
            raise ConfigError(f"output directory {str(run)!r} already holds a run; pass --resume to continue it or choose another --out")
        if run.is_interrupted():
            print(f"[{name}] {run} holds an interrupted run with no verified checkpoint; starting it over", flush=True)
            run.start_over()
        return lock
    except BaseException:
        lock.release()
        raise


def resume_point(run: RunDir, name: str, speak: bool = True):
    """The newest verified checkpoint; says which newer ones were skipped. CheckpointError when none verifies."""
    path, notes = run.find_checkpoint()
    for note in notes if speak else []:
        print(f"[{name}] resume: skipped {note}", flush=True)
    if path is None:
        why = f" ({'; '.join(notes)})" if notes else ""
        raise CheckpointError(f"--resume: {run} has no checkpoint that verifies{why}; run without --resume to start it over")
    return path


def set_aside_diverged(run: RunDir, first_bad_step: int):
    """The loss of `first_bad_step` was non-finite, so the weights after step first_bad_step - 1 are damaged:
    every checkpoint from that step on is renamed `diverged-step-NNNNNN` (kept for a look, never resumed
    from) and latest.json points at the newest one left. Returns that one, or None."""
    for path in run.all_checkpoints():
        if int(STEP_DIR.match(path.name).group(1)) >= first_bad_step - 1:
            aside = path.with_name(f"diverged-{path.name}")
            shutil.rmtree(aside, ignore_errors=True)
            path.rename(aside)
    good = run.latest_checkpoint()
    run.set_latest(int(STEP_DIR.match(good.name).group(1)) if good is not None else None)
    return good


# --------------------------------------------------------------------------------------------------
# a resume under another config


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(_flatten(v, key) if isinstance(v, dict) else {key: v})
    return out


def config_changes(old: dict, new: dict, old_world: int = 1, new_world: int = 1) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose value differs (RESUMABLE_KEYS excepted). The per-process batch may change with the
    world size as long as the global batch (train.batch_size × processes) stays the same."""
    a, b = _flatten(old), _flatten(new)
    changed = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k not in RESUMABLE_KEYS}
    bs = changed.get("train.batch_size")
    if bs and isinstance(bs[0], int) and isinstance(bs[1], int) and bs[0] * old_world == bs[1] * new_world:
        del changed["train.batch_size"]
    return changed


def describe_changes(changes: dict[str, tuple[Any, Any]], limit: int = 4) -> str:
    items = [f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items()]
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def check_changes(changes: dict[str, tuple[Any, Any]], allow: bool, run: RunDir, step: int, record: bool = True) -> None:
    """Refuse a changed config (naming the keys), or record what --allow-changes accepted."""
    if not changes:
        return
    if not allow:
        raise ConfigError(f"--resume: the config differs from the checkpoint's ({describe_changes(changes)}); "
                          "resume with the run's own settings, or pass --allow-changes to accept the change")
    if not record:
        return
    run.append_change({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "step": step, "changes": {k: [o, n] for k, (o, n) in changes.items()}})
    print(f"resume at step {step} with changed config: {describe_changes(changes)} (recorded in {run.path / 'changes.jsonl'})", flush=True)
