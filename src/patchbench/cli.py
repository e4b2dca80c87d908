"""patchbench command line: train | study | sample | report | list | bench | match | data.

Bad input ends in one line `patchbench: error: ...` and exit status 2; so does an environmental fault
(disk full, permission denied: `patchbench: error: <what>: <path>`); Ctrl-C ends in one line
`patchbench: interrupted` and exit status 130. Only an internal bug shows a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch

from patchbench import registry, yamlio
from patchbench.bench.cli import add_arguments as add_bench_arguments
from patchbench.bench.cli import run as run_bench
from patchbench.data.speech import synthesize
from patchbench.engine.measure import resolve_device
from patchbench.engine.trainer import load_run, train
from patchbench.errors import ConfigError, user_message
from patchbench.models.base import count_params
from patchbench.recipe import expand_runs, load_recipe, resolve_recipe, select_run
from patchbench.studies.match import match
from patchbench.studies.report import write_report
from patchbench.studies.study import run_study

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block): `patchbench train: error: ... (see patchbench train -h)`."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


def at_least(lo: int):
    """argparse type: an integer >= lo, refused with one line naming the option."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {value}")
        return value

    return parse


def between(lo: float, hi: float):
    """argparse type: a number in [lo, hi]."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in [{lo:g}, {hi:g}], got {text!r}") from None
        if not lo <= value <= hi:  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be a number in [{lo:g}, {hi:g}], got {text}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="patchbench", description="Cross-modal, patch-based deep-learning studies.")
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train one model from a recipe")
    t.add_argument("recipe")
    t.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. data.corpus=my.txt")
    t.add_argument("--preset", help="a preset of the recipe (cpu, full, ...)")
    t.add_argument("--run", help="which run of a study recipe to train (default: the only or first one)")
    t.add_argument("--out", help="run directory (default: runs/<recipe>-<preset>/<run>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its newest verified checkpoint")
    t.add_argument("--allow-changes", action="store_true",
                   help="with --resume: accept a config that differs from the run's (the change is recorded in RUN/changes.jsonl)")
    t.add_argument("--dry-run", action="store_true", help="build everything and run one optimizer step, writing nothing")
    t.add_argument("--nproc", type=at_least(1), default=0, help="launch N processes with torchrun (DDP)")

    s = sub.add_parser("study", help="run every run of a study recipe and write its report")
    s.add_argument("recipe")
    s.add_argument("overrides", nargs="*")
    s.add_argument("--preset")
    s.add_argument("--out", help="study directory (default: runs/<recipe>-<preset>)")
    s.add_argument("--resume", action="store_true", help="skip finished runs, resume interrupted ones")
    s.add_argument("--allow-changes", action="store_true", help="with --resume: accept runs whose config changed (recorded in each run)")
    s.add_argument("--jobs", type=at_least(1), default=1,
                   help="train N runs side by side, the cores shared out among them (OMP_NUM_THREADS, when set, wins); "
                        "default 1")

    r = sub.add_parser("report", help="(re)write the report of a study directory")
    r.add_argument("study_dir")

    sm = sub.add_parser("sample", help="sample text from a trained run")
    sm.add_argument("run_dir")
    sm.add_argument("--prompt", default="")
    sm.add_argument("--top-k", type=at_least(1), default=50, help="sample among the K most likely tokens")
    sm.add_argument("--seed", type=at_least(0), default=43)
    sm.add_argument("--tokens", type=at_least(1), default=100, help="tokens to generate")
    sm.add_argument("--device", default="auto")

    sub.add_parser("list", help="models, tasks and recipes")

    pc = sub.add_parser("params", help="parameter counts of a recipe's runs, built on the meta device (no memory, no data)")
    pc.add_argument("recipe")
    pc.add_argument("overrides", nargs="*")
    pc.add_argument("--preset")

    dt = sub.add_parser("data", help="make data sets")
    dsub = dt.add_subparsers(dest="data_cmd", required=True)
    sp = dsub.add_parser("speech-synth", help="a Speech-Commands-layout folder spoken by espeak-ng in many voices")
    sp.add_argument("out", help="folder to write (WORD/*.wav, validation_list.txt, testing_list.txt)")
    sp.add_argument("--words", nargs="+", help="words to speak (default: the 35 of Speech Commands v0.02)")
    sp.add_argument("--voices", nargs="+", help="espeak-ng voices (default: 8 English accents)")
    sp.add_argument("--variants", nargs="+", help="espeak-ng voice variants, e.g. m1 f3 (default: m1 m3 m5 f1 f3 f5)")
    sp.add_argument("--speeds", nargs="+", type=at_least(1), help="words per minute (default: 140 180)")
    sp.add_argument("--pitches", nargs="+", type=at_least(0), help="pitches 0-99 (default: 35 65)")
    sp.add_argument("--val-percent", type=between(0, 100), default=10.0, help="share of speakers (voice+variant) held out for validation")
    sp.add_argument("--test-percent", type=between(0, 100), default=10.0, help="share of speakers held out for testing")
    sp.add_argument("--jobs", type=at_least(0), default=0, help="parallel espeak-ng processes (default: one per core)")

    mt = sub.add_parser("match", help="pick a model knob value that matches another model's parameter count")
    mt.add_argument("target", help="the model to match, e.g. resnet18")
    mt.add_argument("family", help="the model family to size, e.g. convmixer")
    mt.add_argument("--knob", required=True, help="an integer config field (depth, dim) or a list entry (depths.2)")
    mt.add_argument("--set", dest="family_set", nargs="+", action="extend", default=[], metavar="K=V", help="the family's "
                    "fixed config, e.g. dim=512 kernel=9")
    mt.add_argument("--target-set", nargs="+", action="extend", default=[], metavar="K=V", help="the target's config")
    mt.add_argument("--num-classes", type=at_least(1), help="the same classifier size on both sides (default: none, bodies only)")
    mt.add_argument("--values", help="candidate values instead of a search: 4,8,12 or LO:HI")
    mt.add_argument("--step", type=at_least(1), default=1, help="search only multiples of STEP (e.g. 8 for widths)")

    b = sub.add_parser("bench", help="measure training throughput and memory of models")
    add_bench_arguments(b)
    return p


def _default_out(recipe: str, preset: str | None) -> Path:
    return Path("runs") / f"{Path(recipe).stem}-{preset or 'default'}"


def cmd_train(args) -> int:
    if args.allow_changes and not args.resume:
        raise ConfigError("--allow-changes: only means something with --resume (it accepts a changed config for a resumed run)")
    # resolved first: a bad recipe or override is one line here, not one traceback per torchrun worker;
    # the user's overrides win over the recipe's run entries; with --run they apply to that run only
    merged = resolve_recipe(load_recipe(args.recipe), args.preset, args.overrides, args.recipe, run=args.run)
    cfg = select_run(expand_runs(merged), args.run, args.recipe)
    if args.nproc and "LOCAL_RANK" not in os.environ:
        return _launch_torchrun(args.nproc, args.raw_argv)
    if args.dry_run:
        return _dry_run(cfg)

    out = Path(args.out) if args.out else _default_out(args.recipe, args.preset) / cfg.name
    summary = train(cfg, out, resume=args.resume, allow_changes=args.allow_changes)
    if summary.get("finished", True) and "final_metric" in summary:
        print(f"{cfg.name}: final metric {summary['final_metric']:.4f} ({summary['final_metric_name']}); run in {out}")
    return 0


def _dry_run(cfg) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        tc = dataclasses.replace(cfg.train, max_steps=1, eval_every=1, sample_tokens=0, progress=False)
        summary = train(dataclasses.replace(cfg, train=tc), Path(tmp) / cfg.name)
    if "params_total" in summary:  # rank 0 (the other ranks of a torchrun job summarise nothing)
        print(f"dry run ok: {cfg.name} built and took one step; {summary['params_total']:,} parameters, val_loss "
              f"{summary['final_val_loss']:.4f}")
    return 0


def _launch_torchrun(n: int, raw: list[str]) -> int:
    return run_torchrun(torchrun_command(n, raw))


def torchrun_command(n: int, raw: list[str]) -> list[str]:
    """This very command under torchrun, without --nproc (given as `--nproc N` or `--nproc=N`).

    The module's arguments follow a `--`: torchrun's own parser would otherwise take `--run` for an
    abbreviation of its `--run-path` ("ambiguous option")."""
    argv, skip = [], False
    for a in raw:
        if skip or a.startswith("--nproc="):
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        argv.append(a)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", "-m", "patchbench", "--", *argv]


def run_torchrun(cmd: list[str]) -> int:
    """Run a torchrun command, forwarding the workers' output. A worker that stops on a user mistake or an
    environmental fault writes its one line to a file instead of stderr (see _fail); it is printed here
    once, and torchrun's multi-line failure report that follows is left out."""
    with tempfile.TemporaryDirectory(prefix="patchbench-nproc-") as tmp:
        errors = Path(tmp) / "error"
        env = {**os.environ, "PATCHBENCH_ERROR_FILE": str(errors), "LOGLEVEL": os.environ.get("LOGLEVEL", "ERROR")}
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)

        def forward() -> None:  # the workers' stderr (progress bars) live, until one of them reports an error
            while chunk := os.read(proc.stderr.fileno(), 65536):
                if not any(Path(tmp).glob("error*")):
                    sys.stderr.buffer.write(chunk)
                    sys.stderr.flush()

        pump = threading.Thread(target=forward, daemon=True)
        pump.start()
        try:
            status = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
        pump.join(timeout=5)
        reports = sorted(Path(tmp).glob("error*"))
        if status != 0 and reports:
            print(reports[0].read_text().strip(), file=sys.stderr)
            return 130 if "interrupted" in reports[0].read_text() else 2
        if status != 0:
            print(f"patchbench: error: a training process failed (torchrun exit status {status}); see the messages above", file=sys.stderr)
        return status


def cmd_study(args) -> int:
    out = Path(args.out) if args.out else _default_out(args.recipe, args.preset)
    if args.allow_changes and not args.resume:
        raise ConfigError("--allow-changes: only means something with --resume (it accepts a changed config for resumed runs)")
    report = run_study(args.recipe, args.preset, args.overrides, out, resume=args.resume, allow_changes=args.allow_changes,
                       jobs=args.jobs)
    print(f"report: {report}")
    return 0


def cmd_report(args) -> int:
    print(f"report: {write_report(Path(args.study_dir))}")
    return 0


def cmd_sample(args) -> int:
    task, cfg, model = load_run(args.run_dir)
    device = resolve_device(args.device)
    model.to(device)
    text = task.sample(model, device, args.prompt, args.tokens, args.top_k, args.seed)
    if text is None:
        raise ConfigError(f"run {args.run_dir!r}: task {cfg.task.name!r} does not generate text")
    print(text)
    return 0


def cmd_match(args) -> int:
    values = None
    if args.values:
        try:
            if ":" in args.values:
                lo, hi = (int(v) for v in args.values.split(":", 1))
                values = list(range(lo, hi + 1, args.step))
            else:
                values = [int(v) for v in args.values.split(",")]
        except ValueError:
            raise ConfigError(f"--values {args.values!r}: expected integers as 4,8,12 or LO:HI") from None
    result = match(args.target, args.family, args.knob, args.family_set, args.target_set, args.num_classes, values, args.step)
    print(result.format())
    return 0


def cmd_data(args) -> int:
    counts = synthesize(args.out, args.words, args.voices, args.variants, args.speeds, args.pitches,
                        args.val_percent, args.test_percent, args.jobs)
    print(f"speech-synth: {counts['clips']} clips of {counts['words']} words by {counts['speakers']} speakers in {counts['root']} "
          f"(training {counts['training']}, validation {counts['validation']}, testing {counts['testing']})")
    return 0


def cmd_params(args) -> int:
    """Counts on the meta device, so the full presets can be checked on any machine."""
    runs = expand_runs(resolve_recipe(load_recipe(args.recipe), args.preset, args.overrides, args.recipe))
    rows = []
    for cfg in runs:
        if getattr(cfg.model, "vocab_size", None) == 0 or getattr(cfg.model, "num_classes", None) == 0:
            raise ConfigError(f"run {cfg.name!r}: model size depends on the data (vocab_size/num_classes 0); set it, e.g. "
                              f"runs.{cfg.name}.model.vocab_size=50257")
        with torch.device("meta"):
            counts = count_params(registry.create_model(cfg.model))
        rows.append((cfg.name, cfg.model.name, counts["total"], counts["trainable"]))
    base = rows[-1][2] if len(rows) == 2 else rows[0][2]
    for name, model, total, trainable in rows:
        print(f"{name:<20} {model:<12} {total:>14,} parameters ({trainable:,} trainable) {100 * (total - base) / base:+.2f}%")
    return 0


def cmd_list(args) -> int:
    print("models:")
    for name in registry.list_models():
        e = registry.get_model(name)
        print(f"  {name:<22} [{e.modality}] {e.doc}")
    print("tasks:")
    for name in registry.list_tasks():
        e = registry.get_task(name)
        print(f"  {name:<22} [{e.modality}] {e.doc}")
    print("recipes:")
    for p in sorted(RECIPES_DIR.glob("*.yaml")) if RECIPES_DIR.is_dir() else []:

        raw = yamlio.load(p.read_text()) or {}
        presets = ", ".join((raw.get("presets") or {}).keys())
        print(f"  {p.stem:<22} {raw.get('description', '').strip().splitlines()[0] if raw.get('description') else ''} (presets: {presets})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["--"]:  # `torchrun -m patchbench -- train ...` (older argparse keeps the separator)
        raw = raw[1:]
    args, extra = parser.parse_known_args(raw)
    args.raw_argv = raw
    # key=value overrides may come after options (argparse stops collecting positionals at an option)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    handlers = {"train": cmd_train, "study": cmd_study, "report": cmd_report, "sample": cmd_sample, "list": cmd_list,
                "match": cmd_match, "data": cmd_data, "params": cmd_params}
    try:
        if args.cmd == "bench":
            return run_bench(args)
        return handlers[args.cmd](args)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as e:
        message = user_message(e)
        if message is None:
            raise
        return _fail(f"error: {message}", 2)


def _fail(message: str, status: int) -> int:
    """One line on stderr. In a torchrun job started by `--nproc`, each rank writes it to a file the
    launcher prints once; under a bare torchrun only rank 0 speaks (every rank meets the same mistake)."""
    line = f"patchbench: {message}"
    rank = os.environ.get("RANK", "0")
    report = os.environ.get("PATCHBENCH_ERROR_FILE")
    if report and "LOCAL_RANK" in os.environ:
        Path(f"{report}{'' if rank == '0' else '.rank' + rank}").write_text(line + "\n")
    elif rank == "0":
        print(line, file=sys.stderr, flush=True)
    return status
