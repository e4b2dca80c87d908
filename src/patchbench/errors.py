"""User-facing errors. Each message is one line naming the key or thing and what would be valid.

The CLI catches `PatchbenchError`, prints `patchbench: error: <message>` and exits with status 2.
This module imports nothing of patchbench, so every layer may raise these.
"""

from __future__ import annotations


class PatchbenchError(ValueError):
    """Base of every error patchbench reports to the user without a traceback."""


class ConfigError(PatchbenchError):
    """A bad recipe, override, option or run directory."""


class DataMissing(ConfigError):
    """A data set's files are absent (a recipe can name a fallback data set)."""


class CheckpointError(PatchbenchError):
    """A checkpoint that is missing, corrupt or belongs to another run."""


def user_message(e: BaseException) -> str | None:
    """The one line a user sees for a user mistake or an environmental fault; None for an internal bug
    (which keeps its traceback)."""
    if isinstance(e, PatchbenchError):
        return str(e)
    if isinstance(e, OSError):  # disk full, permission denied, a vanished file, ...
        what = e.strerror or str(e) or type(e).__name__
        return f"{what}: {e.filename}" if e.filename is not None else what
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return "out of memory; lower train.batch_size or the model size"
    return None
