"""Where decoded data and trained tokenizers are cached: $PATCHBENCH_CACHE or ~/.cache/patchbench."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> str:
    return os.environ.get("PATCHBENCH_CACHE", str(Path("~/.cache/patchbench").expanduser()))
