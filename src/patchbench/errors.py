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
