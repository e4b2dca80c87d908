"""`python -m patchbench.studies.worker RUN_DIR [--resume] [--allow-changes]`: train the run whose config.yaml is in RUN_DIR,
then count its training FLOPs per example (RUN/flops.json, see studies/flops.py).

The study runner starts one worker per run so that every run is measured in a fresh process.
"""

from __future__ import annotations

import sys

from patchbench.engine.trainer import train
from patchbench.errors import user_message
from patchbench.recipe import run_config_from_dict
from patchbench.rundir import RunDir


def main(argv: list[str]) -> int:
    run = RunDir(argv[0])
    try:
        cfg = run_config_from_dict(run.read_config())
        summary = train(cfg, run.path, resume="--resume" in argv, allow_changes="--allow-changes" in argv)
        if summary.get("finished", True):  # count the run's training FLOPs once, for the report's FLOPs axis
            from patchbench.studies.flops import run_flops

            record = run_flops(run.path)
            print(f"[{cfg.name}] {record['train_flops_per_example']:.4g} training FLOPs per example", flush=True)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the study runner reports it, once
        return 130
    except Exception as e:  # noqa: BLE001 - a user mistake or an environmental fault is one line; a bug keeps its traceback
        message = user_message(e)
        if message is None:
            raise
        print(f"patchbench: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
