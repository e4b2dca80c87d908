"""`python -m patchbench.studies.worker RUN_DIR [--resume]`: train the run whose config.yaml is in RUN_DIR.

The study runner starts one worker per run so that every run is measured in a fresh process.
"""

from __future__ import annotations

import sys

from patchbench.engine.trainer import train
from patchbench.errors import PatchbenchError
from patchbench.recipe import run_config_from_dict
from patchbench.rundir import RunDir


def main(argv: list[str]) -> int:
    run = RunDir(argv[0])
    try:
        train(run_config_from_dict(run.read_config()), run.path, resume="--resume" in argv)
    except PatchbenchError as e:
        print(f"patchbench: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
