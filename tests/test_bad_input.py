"""Every verb refuses bad input with one line naming the key or thing, a non-zero exit and no traceback.

The table runs in-process through `patchbench.cli.main` (an escaping exception fails the test, which is
how a traceback would reach a user); a few cases run as real subprocesses to check stderr end to end.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_text_recipe

from patchbench.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")

# (verb arguments with {recipe} / {tmp} / {run} / {study} placeholders, text the one line must contain)
CASES = [
    # ---- train: the recipe file
    (["train", "{tmp}/missing.yaml"], "no such file"),
    (["train", "{tmp}/binary.yaml"], "not a text file"),
    (["train", "{tmp}/list.yaml"], "expected a YAML mapping"),
    (["train", "{tmp}/broken.yaml"], "not valid YAML"),
    (["train", "{tmp}/unknown_top.yaml"], "unknown top-level key 'trian'"),
    (["train", "{tmp}"], "no such file"),
    # ---- train: options
    (["train", "{recipe}", "--preset", "gpu"], "--preset 'gpu'"),
    (["train", "{recipe}", "--run", "gpt3"], "--run 'gpt3'"),
    (["train", "{recipe}", "--nproc", "-1"], "--nproc"),
    (["train", "{recipe}", "--nproc", "0"], "--nproc"),
    (["train", "{recipe}", "--nproc", "two"], "--nproc"),
    (["train", "{recipe}", "--nproc", "2", "train.batch_size=0"], "train.batch_size=0"),  # refused before any launch
    (["train", "{recipe}", "--frobnicate"], "--frobnicate"),
    (["study", "{recipe}", "--jobs", "0"], "--jobs"),
    (["study", "{recipe}", "--jobs", "all"], "--jobs"),
    (["train", "{recipe}", "--allow-changes"], "--allow-changes"),
    (["train", "{recipe}", "--run", "gpt2", "--out", "{tmp}/nothing-here", "--resume"], "no checkpoint"),
    (["train", "{recipe}", "--run", "gpt2", "--out", "{tmp}/user-folder"], "not a patchbench run folder"),
    (["train", "{recipe}", "--run", "gpt2", "--out", "{tmp}/binary.yaml/run"], "not writable"),
    # ---- train: overrides, syntax and keys
    (["train", "{recipe}", "batch_size"], "expected KEY=VALUE"),
    (["train", "{recipe}", "=3"], "override '=3'"),
    (["train", "{recipe}", "a..b=1"], "override 'a..b=1'"),
    (["train", "{recipe}", "train.bacth_size=4"], "train.bacth_size: unknown key"),
    (["train", "{recipe}", "trian.batch_size=4"], "unknown key 'trian'"),
    (["train", "{recipe}", "runs.gpt3.model.n_layer=2"], "no run 'gpt3'"),
    (["train", "{recipe}", "model.name=gpt5"], "unknown model 'gpt5'"),
    (["train", "{recipe}", "task.name=next_word"], "unknown task 'next_word'"),
    (["train", "{recipe}", "--run", "gpt2", "model.n_head=3"], "model.n_embd"),
    (["train", "{recipe}", "--run", "gpt2", "model.n_lyer=3"], "model.n_lyer: unknown key"),
    (["train", "{recipe}", "data.context=0"], "data.context"),
    (["train", "{recipe}", "data.stride=0"], "data.stride=0: must be an integer >= 1"),
    (["train", "{recipe}", "data.val_windows=-1"], "data.val_windows=-1"),
    # ---- train: types
    (["train", "{recipe}", "train.batch_size=four"], "train.batch_size: expected an integer"),
    (["train", "{recipe}", "train.batch_size=2.5"], "train.batch_size: expected an integer"),
    (["train", "{recipe}", "train.compile=1"], "train.compile: expected true or false"),
    (["train", "{recipe}", "optim.lr=fast"], "optim.lr: expected a number"),
    (["train", "{recipe}", "optim.betas=0.9"], "optim.betas: expected a list"),
    # ---- train: ranges (each was a ZeroDivisionError, a torch/numpy traceback or a silent wrong result)
    (["train", "{recipe}", "train.batch_size=0"], "train.batch_size=0: must be an integer >= 1"),
    (["train", "{recipe}", "train.batch_size=-2"], "train.batch_size=-2"),
    (["train", "{recipe}", "train.accum_steps=0"], "train.accum_steps=0: must be an integer >= 1"),
    (["train", "{recipe}", "train.eval_every=0"], "train.eval_every=0: must be an integer >= 1"),
    (["train", "{recipe}", "train.eval_every=-10"], "train.eval_every=-10"),
    (["train", "{recipe}", "train.checkpoint_every=-1"], "train.checkpoint_every=-1"),
    (["train", "{recipe}", "train.max_steps=-5"], "train.max_steps=-5"),
    (["train", "{recipe}", "train.stop_after_steps=-1"], "train.stop_after_steps=-1"),
    (["train", "{recipe}", "train.epochs=-1"], "train.epochs=-1.0"),
    (["train", "{recipe}", "train.epochs=0"], "train.epochs=0.0: must be a finite number > 0"),
    (["train", "{recipe}", "train.final_metric_window=-1"], "train.final_metric_window=-1"),
    (["train", "{recipe}", "train.final_metric_window=0"], "train.final_metric_window=0"),
    (["train", "{recipe}", "train.seed=-1"], "train.seed=-1"),
    (["train", "{recipe}", "train.seed=4294967296"], "train.seed=4294967296"),
    (["train", "{recipe}", "train.sample_tokens=-1"], "train.sample_tokens=-1"),
    (["train", "{recipe}", "train.num_workers=-1"], "train.num_workers=-1"),
    (["train", "{recipe}", "optim.lr=-1"], "optim.lr=-1.0: must be a finite number > 0"),
    (["train", "{recipe}", "optim.lr=0"], "optim.lr=0.0"),
    (["train", "{recipe}", "optim.lr=.nan"], "optim.lr=nan"),
    (["train", "{recipe}", "optim.lr=.inf"], "optim.lr=inf"),
    (["train", "{recipe}", "optim.lr=1e400"], "optim.lr=inf"),
    (["train", "{recipe}", "optim.betas=[2,3]"], "optim.betas[0]=2.0"),
    (["train", "{recipe}", "optim.betas=[0.9,1.0]"], "optim.betas[1]=1.0"),
    (["train", "{recipe}", "optim.betas=[0.9]"], "optim.betas"),
    (["train", "{recipe}", "optim.eps=-1"], "optim.eps=-1.0"),
    (["train", "{recipe}", "optim.eps=0"], "optim.eps=0.0"),
    (["train", "{recipe}", "optim.weight_decay=-0.1"], "optim.weight_decay=-0.1"),
    (["train", "{recipe}", "optim.momentum=1.5"], "optim.momentum=1.5"),
    (["train", "{recipe}", "optim.warmup_steps=-3"], "optim.warmup_steps=-3"),
    (["train", "{recipe}", "optim.min_lr=-1e-5"], "optim.min_lr=-1e-05"),
    (["train", "{recipe}", "optim.clip=-1"], "optim.clip=-1.0"),
    (["train", "{recipe}", "optim.clip=.nan"], "optim.clip=nan"),
    # ---- study
    (["study", "{tmp}/missing.yaml"], "no such file"),
    (["study", "{tmp}/binary.yaml"], "not a text file"),
    (["study", "{recipe}", "train.batch_size=0"], "train.batch_size=0"),
    (["study", "{recipe}", "study.seeds=[a]"], "study.seeds[0]: expected an integer"),
    (["study", "{recipe}", "study.colour=1"], "study.colour: unknown key"),
    (["study", "{recipe}", "--allow-changes"], "--allow-changes"),
    (["study", "{recipe}", "--out", "{study}"], "already holds a study"),
    (["study", "{recipe}", "--out", "{tmp}/user-folder"], "not a patchbench study folder"),
    (["study", "{recipe}", "--preset", "gpu"], "--preset 'gpu'"),
    # ---- bench
    (["bench", "gpt5", "--in-process"], "unknown model 'gpt5'"),
    (["bench", "gpt2", "--batch-size", "0", "--in-process"], "--batch-size"),
    (["bench", "gpt2", "--dtype", "fp64"], "--dtype"),
    (["bench", "gpt2", "--set", "n_layer", "--in-process"], "expected KEY=VALUE"),
    (["bench", "gpt2", "--set", "vit.depth=2", "--in-process"], "'vit' is not one of the benchmarked models"),
    (["bench", "gpt2", "--steps", "zero"], "--steps"),
    (["bench"], "models"),
    # ---- sample
    (["sample", "{tmp}/no-run"], "no config.yaml"),
    (["sample", "{run}"], "no checkpoint"),
    (["sample", "{run}", "--tokens", "0"], "--tokens"),
    (["sample", "{run}", "--tokens", "-1"], "--tokens"),
    (["sample", "{run}", "--top-k", "0"], "--top-k"),
    (["sample", "{run}", "--top-k", "-5"], "--top-k"),
    (["sample", "{run}", "--seed", "-1"], "--seed"),
    (["sample", "{run}", "--tokens", "many"], "--tokens"),
    # ---- report
    (["report", "{tmp}/no-study"], "no-study"),
    (["report", "{run}"], "study"),
    # ---- list
    (["list", "extra"], "unrecognized arguments: extra"),
    # ---- match
    (["match", "resnet18", "convmixer", "--knob", "depth", "--step", "0"], "--step"),
    (["match", "resnet18", "convmixer", "--knob", "depth", "--step", "-8"], "--step"),
    (["match", "resnet18", "convmixer", "--knob", "depth", "--num-classes", "0"], "--num-classes"),
    (["match", "resnet18", "convmixer", "--knob", "depth", "--values", "a,b"], "--values"),
    (["match", "resnet19", "convmixer", "--knob", "depth"], "resnet19"),
    (["match", "resnet18", "convmixr", "--knob", "depth"], "convmixr"),
    (["match", "resnet18", "convmixer"], "--knob"),
    # ---- params
    (["params", "{tmp}/missing.yaml"], "no such file"),
    (["params", "{recipe}", "optim.lr=-1"], "optim.lr=-1.0"),
    (["params", "{recipe}", "model.name=gpt5"], "unknown model 'gpt5'"),
    # ---- data
    (["data"], "data_cmd"),
    (["data", "speech-synth", "{tmp}/speech", "--val-percent", "150"], "--val-percent"),
    (["data", "speech-synth", "{tmp}/speech", "--test-percent", "-1"], "--test-percent"),
    (["data", "speech-synth", "{tmp}/speech", "--jobs", "-1"], "--jobs"),
    (["data", "speech-synth", "{tmp}/speech", "--speeds", "0"], "--speeds"),
    (["data", "speech-synth", "{tmp}/speech", "--pitches", "-1"], "--pitches"),
    (["data", "speak"], "speak"),
    # ---- no verb / unknown verb
    ([], "cmd"),
    (["trian"], "trian"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The files the table refers to: a tiny recipe, broken recipes, a user's folder, a run without
    checkpoints and an existing study folder."""
    tmp = tmp_path_factory.mktemp("bad-input")
    corpus = tmp / "verse.txt"
    corpus.write_text("Love thee fair heart, sweet night of time.\n" * 400)
    recipe = tiny_text_recipe(corpus)
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    (tmp / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (tmp / "list.yaml").write_text("- a\n- b\n")
    (tmp / "broken.yaml").write_text("task: {name: next_token\n")
    (tmp / "unknown_top.yaml").write_text(yaml.safe_dump({**recipe, "trian": {}}))
    (tmp / "user-folder").mkdir()
    (tmp / "user-folder" / "config.yaml").write_text("my: own file\n")
    run = tmp / "run"
    run.mkdir()
    (run / ".patchbench-run").write_text("")
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "gpt2", **{k: v for k, v in recipe.items() if k != "runs"},
                                                     "model": recipe["runs"][1]["model"]}))
    study = tmp / "study"
    study.mkdir()
    (study / "study.yaml").write_text(yaml.safe_dump(recipe))
    return {"tmp": str(tmp), "recipe": str(tmp / "tiny.yaml"), "run": str(run), "study": str(study)}


def _run_main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own exit
        return e.code if isinstance(e.code, int) else 2


@pytest.mark.parametrize("argv, expect", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_is_one_line(argv, expect, world, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # default output folders land here
    argv = [a.format(**world) for a in argv]
    status = _run_main(argv)
    err = capsys.readouterr().err
    assert status != 0, f"accepted: {argv}"
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("patchbench"), lines[0]
    assert expect in lines[0], lines[0]


def test_the_table_is_large_enough():
    verbs = {argv[0] for argv, _ in CASES if argv}
    assert len(CASES) >= 60
    assert verbs >= {"train", "study", "bench", "sample", "report", "list", "match", "params", "data"}


def test_readme_float_forms_are_accepted(world, capsys):
    """`optim.lr=1e-3` (the README's example) and the other float spellings YAML 1.1 reads as strings."""
    from patchbench.recipe import expand_runs, load_recipe, resolve_recipe

    for text, want in [("1e-3", 1e-3), ("1e300", 1e300), (".5", 0.5), ("2E-4", 2e-4), ("+1e-2", 1e-2)]:
        runs = expand_runs(resolve_recipe(load_recipe(world["recipe"]), None, [f"optim.lr={text}"], "r"))
        assert runs[0].optim.lr == want
    recipe_path = Path(world["tmp"]) / "floats.yaml"
    recipe_path.write_text(Path(world["recipe"]).read_text().replace("lr: 0.003", "lr: 3e-3"))
    assert "lr: 3e-3" in recipe_path.read_text()
    assert expand_runs(resolve_recipe(load_recipe(recipe_path), None, [], "r"))[0].optim.lr == 3e-3


@pytest.mark.parametrize("argv, expect", [
    (["train", "{tmp}/binary.yaml"], "not a text file"),
    (["train", "{recipe}", "train.batch_size=0"], "train.batch_size=0"),
    (["sample", "{run}", "--top-k", "0"], "--top-k"),
])
def test_bad_input_in_a_real_process(argv, expect, world):
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run([sys.executable, "-m", "patchbench", *[a.format(**world) for a in argv]], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and expect in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
