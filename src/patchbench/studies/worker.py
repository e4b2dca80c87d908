"""`python -m patchbench.studies.worker RUN_DIR [--resume]`: train the run whose config.yaml is in RUN_DIR.

The study runner starts one worker per run so that every run is measured in a fresh process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def main(argv: list[str]) -> int:
    from patchbench.config import ConfigError, run_config_from_dict
    from patchbench.engine.checkpoint import CheckpointError
    from patchbench.engine.trainer import train

    run_dir = Path(argv[0])
    try:
        cfg = run_config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
        train(cfg, run_dir, resume="--resume" in argv)
    except (ConfigError, CheckpointError) as e:
        print(f"patchbench: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
