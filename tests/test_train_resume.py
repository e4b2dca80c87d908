"""End to end on CPU: train -> stop -> resume reproduces the uninterrupted curve exactly -> sample.
Plus the run directory's contents and the checkpoint's refusals."""

import json
import shutil

import pytest
import yaml
from conftest import tiny_text_recipe

from patchbench.cli import main
from patchbench.rundir import MARKER


def _curve(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r.get("train_loss"), r.get("val_loss")) for r in rows]


@pytest.fixture
def recipe(corpus, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_text_recipe(corpus)))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("run", ["gpt2", "pacing"])
def test_resume_reproduces_the_uninterrupted_curve(recipe, tmp_path, run, capsys):
    full, parts = tmp_path / "full", tmp_path / "parts"
    assert main(["train", str(recipe), "--run", run, "--out", str(full)]) == 0
    assert main(["train", str(recipe), "--run", run, "--out", str(parts), "train.stop_after_steps=5"]) == 0
    assert not (parts / "summary.json").exists(), "a stopped run must not look finished"
    assert json.loads((parts / "checkpoints" / "latest.json").read_text())["step"] == 5
    assert main(["train", str(recipe), "--run", run, "--out", str(parts), "--resume"]) == 0

    assert _curve(parts) == _curve(full)  # bitwise: same losses at every step
    before = (parts / "summary.json").read_text()
    assert main(["train", str(recipe), "--run", run, "--out", str(parts), "--resume"]) == 0  # finished: kept as is
    assert (parts / "summary.json").read_text() == before
    s_full = json.loads((full / "summary.json").read_text())
    s_parts = json.loads((parts / "summary.json").read_text())
    assert s_parts["final_metric"] == s_full["final_metric"] and s_parts["resumed"] is True
    assert (full / "sample.txt").read_text() == (parts / "sample.txt").read_text()

    # the run directory re-creates the run and holds what the report needs
    cfg = yaml.safe_load((full / "config.yaml").read_text())
    assert cfg["model"]["vocab_size"] > 0, "resolved config must hold the tokenizer's vocab size"
    assert any(p.name.startswith("events.out.tfevents") for p in (full / "tb").iterdir())
    assert s_full["params_total"] > 0 and s_full["train_examples_per_s"] > 0 and "peak_rss_bytes" in s_full

    capsys.readouterr()
    assert main(["sample", str(full), "--prompt", "Love", "--tokens", "5", "--top-k", "50", "--seed", "43"]) == 0
    out1 = capsys.readouterr().out
    assert main(["sample", str(full), "--prompt", "Love", "--tokens", "5", "--top-k", "50", "--seed", "43"]) == 0
    assert out1 == capsys.readouterr().out and out1.startswith("Love")


@pytest.mark.slow
def test_resume_refuses_corrupt_and_foreign_checkpoints(recipe, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", str(recipe), "--run", "gpt2", "--out", str(a), "train.stop_after_steps=3"]) == 0
    assert main(["train", str(recipe), "--run", "pacing", "--out", str(b), "train.stop_after_steps=3"]) == 0

    # a checkpoint from another run
    ckpt_b = b / "checkpoints" / "step-000003"
    foreign = tmp_path / "foreign"
    shutil.copytree(a, foreign)
    shutil.rmtree(foreign / "checkpoints" / "step-000003")
    shutil.copytree(ckpt_b, foreign / "checkpoints" / "step-000003")
    capsys.readouterr()
    assert main(["train", str(recipe), "--run", "gpt2", "--out", str(foreign), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "belongs to another run" in err and err.count("\n") == 1

    # corrupt weights
    weights = a / "checkpoints" / "step-000003" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert main(["train", str(recipe), "--run", "gpt2", "--out", str(a), "--resume"]) == 2
    assert "checksum mismatch" in capsys.readouterr().err
    assert not (a / "summary.json").exists()

    # no checkpoint at all / an existing run without --resume
    assert main(["train", str(recipe), "--run", "gpt2", "--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["train", str(recipe), "--run", "gpt2", "--out", str(b)]) == 2
    assert "pass --resume" in capsys.readouterr().err


def test_unwritable_output_directory(recipe, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", str(recipe), "--run", "gpt2", "--out", str(blocker / "run")]) == 2
    err = capsys.readouterr().err
    assert "is not writable" in err and err.count("\n") == 1


def test_causal_lm_objective_needs_a_causal_model(recipe, capsys):
    assert main(["train", str(recipe), "--run", "pacing", "--dry-run", "task.objective=causal_lm"]) == 2
    assert "causal_lm needs a model that predicts every position" in capsys.readouterr().err
    assert main(["train", str(recipe), "--run", "gpt2", "--dry-run", "task.objective=causal_lm"]) == 0


@pytest.mark.slow
def test_study_writes_report_with_both_models(recipe, tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["study", str(recipe), "--out", str(out), "train.max_steps=3", "train.eval_every=1"]) == 0
    report = (out / "report.md").read_text()
    assert "| pacing |" in report and "| gpt2 |" in report and "%)" in report
    for name in ("curves_val.png", "curves_train.png", "curves.csv", "report.html"):
        assert (out / name).stat().st_size > 0
    assert "data:image/png;base64," in (out / "report.html").read_text()
    assert main(["study", str(recipe), "--out", str(out)]) == 2  # refuses to overwrite without --resume
    assert main(["study", str(recipe), "--out", str(out), "--resume", "train.max_steps=3", "train.eval_every=1"]) == 0
    # a resume under other settings would keep finished runs at the old ones: refused, naming the key
    capsys.readouterr()
    assert main(["study", str(recipe), "--out", str(out), "--resume", "train.max_steps=4", "train.eval_every=1"]) == 2
    err = capsys.readouterr().err
    assert "train.max_steps 3 -> 4" in err and err.count("\n") == 1
    assert (out / "report.md").is_file() and "max_steps: 3" in (out / "study.yaml").read_text()  # the study as it was


@pytest.mark.slow
def test_study_jobs_trains_runs_side_by_side(recipe, tmp_path):
    out = tmp_path / "study"
    assert main(["study", str(recipe), "--out", str(out), "--jobs", "2", "train.max_steps=3", "train.eval_every=1"]) == 0
    runs = {name: out / "runs" / name for name in ("pacing", "gpt2")}
    started = {n: (r / MARKER).stat().st_mtime for n, r in runs.items()}  # written when the run is launched
    ended = {n: (r / "summary.json").stat().st_mtime for n, r in runs.items()}
    assert started["gpt2"] < ended["pacing"] and started["pacing"] < ended["gpt2"], "the two runs did not overlap"
    timing = json.loads((out / "timing.json").read_text())
    assert timing["jobs"] == 2 and timing["threads_per_run"] >= 1
    assert "2 runs side by side" in (out / "report.md").read_text()


@pytest.mark.slow
def test_study_jobs_failure_lets_the_other_run_finish(recipe, tmp_path, capsys):
    out = tmp_path / "study"
    args = ["study", str(recipe), "--out", str(out), "--jobs", "2", "train.max_steps=6", "train.eval_every=3"]
    assert main(args + ["runs.pacing.optim.lr=1e30", "runs.pacing.optim.clip=0"]) == 2
    err = capsys.readouterr().err
    assert "run 'pacing' failed" in err and "--resume" in err.splitlines()[-1]
    assert (out / "runs" / "gpt2" / "summary.json").is_file() and not (out / "runs" / "pacing" / "summary.json").exists()
    assert not (out / "report.md").exists()


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(recipe, tmp_path):
    """A real kill: SIGKILL the training process after its third checkpoint, resume, compare."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = ["--run", "gpt2", "train.max_steps=80", "train.checkpoint_every=1", "train.eval_every=20"]
    killed, full = tmp_path / "killed", tmp_path / "full"
    proc = subprocess.Popen([sys.executable, "-m", "patchbench", "train", str(recipe), "--out", str(killed), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    pointer = killed / "checkpoints" / "latest.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if pointer.is_file() and json.loads(pointer.read_text())["step"] >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "summary.json").exists()
    assert main(["train", str(recipe), "--out", str(killed), "--resume", *args]) == 0
    assert main(["train", str(recipe), "--out", str(full), *args]) == 0
    assert _curve(killed) == _curve(full)
