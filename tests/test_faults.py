"""Fault injection: kills inside checkpoint writes, torn logs, damaged checkpoints, hostile pointers, two
writers, a changed config on resume, a full disk, Ctrl-C and a diverging loss. Each run is a tiny GPT-2
on a tiny corpus (12 steps), so the resumed curve is compared bit for bit with an uninterrupted one."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import tiny_text_recipe

from patchbench.cli import main
from patchbench.durable import FolderLock
from patchbench.rundir import RunDir, verify_checkpoint

SRC = str(Path(__file__).resolve().parents[1] / "src")

# Loaded first by the child interpreter (sitecustomize): SIGKILL itself inside the N-th call of one of
# the checkpoint module's steps, the way a power cut or the OOM killer would stop it.
KILL_HOOK = '''
import importlib, os, signal
_spec = os.environ.get("PB_KILL_IN")  # MODULE:ATTR[.ATTR]#N
if _spec:
    _where, _nth = _spec.split("#")
    _module, _path = _where.split(":")
    _owner = importlib.import_module(_module)
    *_parents, _name = _path.split(".")
    for _p in _parents:
        _owner = getattr(_owner, _p)
    _orig, _calls = getattr(_owner, _name), [0]
    def _killer(*a, **k):
        _calls[0] += 1
        if _calls[0] == int(_nth):
            os.kill(os.getpid(), signal.SIGKILL)
        return _orig(*a, **k)
    setattr(_owner, _name, _killer)
'''


def _curve(run_dir: Path) -> list[tuple]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r.get("train_loss"), r.get("val_loss")) for r in rows]


def _args(recipe: Path, out: Path, *extra: str) -> list[str]:
    return ["train", str(recipe), "--run", "gpt2", "--out", str(out), *extra]


def _child(recipe: Path, out: Path, *extra: str, hooks: Path | None = None, **env: str) -> subprocess.Popen:
    """`patchbench train` in a child process (with sitecustomize hooks from `hooks`, if given)."""
    path = os.pathsep.join([str(hooks), SRC] if hooks else [SRC])
    return subprocess.Popen([sys.executable, "-m", "patchbench", *_args(recipe, out, *extra)],
                            env={**os.environ, "PYTHONPATH": path, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("faults")
    rng = random.Random(0)
    words = ["love", "thee", "fair", "heart", "time", "night", "beauty", "eyes", "sweet", "death", "king", "lord", "good", "thou",
             "art", "with", "thy", "self", "mine"]
    text = "\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(5, 9))).capitalize() + "." for _ in range(900))
    (tmp / "verse.txt").write_text(text + "\n")
    r = tiny_text_recipe(tmp / "verse.txt")
    r["train"].update(checkpoint_every=3)
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(r))
    return path


@pytest.fixture(scope="module")
def reference(recipe, tmp_path_factory) -> Path:
    """The uninterrupted run every recovered run must match."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(_args(recipe, out)) == 0
    return out


@pytest.fixture
def stopped(recipe, tmp_path) -> Path:
    """A run stopped cleanly after 6 of 12 steps: checkpoints at steps 3 and 6."""
    out = tmp_path / "run"
    assert main(_args(recipe, out, "train.stop_after_steps=6")) == 0
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == ["step-000003", "step-000006"]
    return out


def _one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --------------------------------------------------------------------------------------------------
# kills


CKPT, RUNDIR = "patchbench.engine.checkpoint", "patchbench.rundir"


@pytest.mark.parametrize("where", [
    f"{CKPT}:save_model#1",  # in the first checkpoint, before its weights are written
    pytest.param(f"{CKPT}:sha256_file#2", marks=pytest.mark.slow),  # in the first checkpoint, weights and state written, before meta.json
    f"{RUNDIR}:RunDir.set_latest#1",  # the first checkpoint renamed into place, latest.json not yet written
    pytest.param(f"{CKPT}:save_model#2", marks=pytest.mark.slow),  # the same three in the second checkpoint
    pytest.param(f"{CKPT}:sha256_file#4", marks=pytest.mark.slow),
    pytest.param(f"{RUNDIR}:RunDir.set_latest#2", marks=pytest.mark.slow),
])
def test_kill_inside_a_checkpoint_write_then_recover(recipe, reference, tmp_path, where, capsys):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(KILL_HOOK)
    out = tmp_path / "run"
    proc = _child(recipe, out, hooks=hooks, PB_KILL_IN=where)
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, "the run was not killed where intended"
    assert not (out / "summary.json").exists()

    # with a verified checkpoint the run resumes; with none it restarts; either way it ends as the reference
    has_checkpoint = RunDir(out).latest_checkpoint() is not None
    assert main(_args(recipe, out, *(["--resume"] if has_checkpoint else []))) == 0
    assert _curve(out) == _curve(reference)
    leftovers = [p.name for p in (out / "checkpoints").iterdir() if ".tmp" in p.name or ".old" in p.name]
    assert leftovers == []


def test_first_checkpoint_killed_leaves_a_restartable_run(recipe, reference, tmp_path, capsys):
    """The state a kill in the first checkpoint leaves: checkpoints/ with only a temporary folder."""
    out = tmp_path / "run"
    assert main(_args(recipe, out, "train.stop_after_steps=3")) == 0
    shutil.rmtree(out / "checkpoints")
    (out / "checkpoints" / ".step-000003.tmp4242").mkdir(parents=True)
    (out / "checkpoints" / ".step-000003.tmp4242" / "model.safetensors").write_bytes(b"\0" * 64)
    capsys.readouterr()

    assert main(_args(recipe, out, "--resume")) == 2  # nothing to resume: says so, and how to restart
    line = _one_line(capsys.readouterr().err)
    assert "no checkpoint that verifies" in line and "without --resume" in line

    assert main(_args(recipe, out)) == 0  # restart
    assert "starting it over" in capsys.readouterr().out
    assert _curve(out) == _curve(reference)
    assert not list((out / "checkpoints").glob(".*tmp*"))


@pytest.mark.slow
def test_study_resume_restarts_a_run_killed_in_its_first_checkpoint(recipe, tmp_path, capsys):
    study = tmp_path / "study"
    args = ["study", str(recipe), "--out", str(study), "train.max_steps=3", "train.eval_every=1"]
    assert main(args) == 0
    run = study / "runs" / "gpt2"
    shutil.rmtree(run / "checkpoints")
    (run / "summary.json").unlink()
    (run / "checkpoints" / ".step-000003.tmp999").mkdir(parents=True)
    assert main([*args, "--resume"]) == 0
    assert (run / "summary.json").is_file() and (study / "report.md").is_file()


# --------------------------------------------------------------------------------------------------
# torn and damaged files


def test_torn_metrics_tail_is_cut_on_resume(recipe, reference, stopped):
    with open(stopped / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "train_lo')  # what a kill in the middle of a write leaves
    assert main(_args(recipe, stopped, "--resume")) == 0
    for line in (stopped / "metrics.jsonl").read_text().splitlines():
        json.loads(line)
    assert _curve(stopped) == _curve(reference)


def _flip_bit(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_meta(ckpt: Path, **changes) -> None:
    meta = json.loads((ckpt / "meta.json").read_text())
    (ckpt / "meta.json").write_text(json.dumps({**meta, **changes}))


CORRUPTIONS = {
    "weights truncated": lambda c: (c / "model.safetensors").write_bytes((c / "model.safetensors").read_bytes()[:100]),
    "weights bit flipped": lambda c: _flip_bit(c / "model.safetensors"),
    "weights deleted": lambda c: (c / "model.safetensors").unlink(),
    "state bit flipped": lambda c: _flip_bit(c / "state.pt"),
    "state from another step": lambda c: shutil.copy(c.parent / "step-000003" / "state.pt", c / "state.pt"),
    "state deleted": lambda c: (c / "state.pt").unlink(),
    "meta is a JSON list": lambda c: (c / "meta.json").write_text("[1, 2]"),
    "meta torn": lambda c: (c / "meta.json").write_text((c / "meta.json").read_text()[:40]),
    "meta without checksums": lambda c: _edit_meta(c, files=None),
    "meta of another format": lambda c: _edit_meta(c, format="other/9"),
    "meta checksum edited": lambda c: _edit_meta(c, files={"model.safetensors": "0" * 64}),
    "folder emptied": lambda c: [p.unlink() for p in c.iterdir()],
}


@pytest.mark.parametrize("damage", list(CORRUPTIONS))
def test_damaged_newest_checkpoint_falls_back_to_the_previous(recipe, reference, stopped, damage, capsys):
    CORRUPTIONS[damage](stopped / "checkpoints" / "step-000006")
    capsys.readouterr()
    assert main(_args(recipe, stopped, "--resume")) == 0
    out = capsys.readouterr().out
    assert "skipped step-000006" in out, out
    assert _curve(stopped) == _curve(reference)  # resumed from step 3, replayed 4..12 exactly


POINTERS = {
    "a JSON list": "[1, 2]",
    "torn": '{"step": 6, "di',
    "a traversal": json.dumps({"step": 9, "dir": "../../elsewhere/checkpoints/step-000009"}),
    "an absolute path": json.dumps({"step": 9, "dir": "/tmp/step-000009"}),
    "a missing step": json.dumps({"step": 9, "dir": "step-000009"}),
}


@pytest.mark.parametrize("pointer", list(POINTERS))
def test_bad_latest_pointer_is_not_followed(recipe, reference, stopped, pointer, capsys):
    (stopped / "checkpoints" / "latest.json").write_text(POINTERS[pointer])
    capsys.readouterr()
    assert main(_args(recipe, stopped, "--resume")) == 0  # the newest verified step folder, step 6
    assert "latest.json" in capsys.readouterr().out
    assert _curve(stopped) == _curve(reference)


def test_traversal_pointer_to_another_runs_checkpoint_is_refused(recipe, stopped, tmp_path, capsys):
    """latest.json pointing at a valid checkpoint outside the run is never loaded."""
    other = tmp_path / "elsewhere" / "checkpoints"
    shutil.copytree(stopped / "checkpoints" / "step-000006", other / "step-000006")
    for p in (stopped / "checkpoints").glob("step-*"):
        shutil.rmtree(p)
    (stopped / "checkpoints" / "latest.json").write_text(json.dumps({"step": 6, "dir": "../../elsewhere/checkpoints/step-000006"}))
    capsys.readouterr()
    assert main(_args(recipe, stopped, "--resume")) == 2
    captured = capsys.readouterr()
    assert "latest.json" in captured.out and "no checkpoint that verifies" in _one_line(captured.err)


def test_flipped_weight_bit_is_refused_not_loaded(recipe, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(recipe, out, "train.stop_after_steps=3")) == 0
    _flip_bit(out / "checkpoints" / "step-000003" / "model.safetensors")
    capsys.readouterr()
    assert main(_args(recipe, out, "--resume")) == 2
    assert "checksum mismatch" in _one_line(capsys.readouterr().err)
    assert main(["sample", str(out), "--tokens", "3"]) == 2
    assert "checksum mismatch" in _one_line(capsys.readouterr().err)


# --------------------------------------------------------------------------------------------------
# folders: locks and the user's files


def test_second_writer_gets_one_line(recipe, stopped, capsys):
    with FolderLock(stopped, "run folder"):  # another process holds the run (same check: flock per open file)
        assert main(_args(recipe, stopped, "--resume")) == 2
        line = _one_line(capsys.readouterr().err)
        assert "in use by process" in line and str(os.getpid()) in line


@pytest.mark.slow
def test_two_real_writers_then_a_stale_lock(recipe, reference, tmp_path, capsys):
    out = tmp_path / "run"
    first = _child(recipe, out, "train.max_steps=100000", "train.eval_every=1000")
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / ".lock").is_file() and (out / ".lock").read_text().strip()):
        time.sleep(0.05)
    capsys.readouterr()
    assert main(_args(recipe, out, "train.max_steps=100000", "train.eval_every=1000")) == 2
    assert f"in use by process {first.pid}" in _one_line(capsys.readouterr().err)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    # the killed holder's lock is gone with it: the folder is usable at once
    assert main(_args(recipe, out, "--resume", "--allow-changes")) in (0, 2)
    assert "in use" not in capsys.readouterr().err


def test_study_second_writer_gets_one_line(recipe, tmp_path, capsys):
    study = tmp_path / "study"
    study.mkdir()
    (study / "study.yaml").write_text("{}")
    with FolderLock(study, "study folder"):
        assert main(["study", str(recipe), "--out", str(study), "--resume"]) == 2
        assert "study folder" in _one_line(capsys.readouterr().err)


def test_out_on_a_users_folder_is_refused_and_left_alone(recipe, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.yaml").write_text("precious: true\n")
    assert main(_args(recipe, folder)) == 2
    assert "not a patchbench run folder" in _one_line(capsys.readouterr().err)
    assert (folder / "config.yaml").read_text() == "precious: true\n" and sorted(p.name for p in folder.iterdir()) == ["config.yaml"]


# --------------------------------------------------------------------------------------------------
# a changed config on resume


def test_resume_with_changed_lr_is_refused_then_accepted_explicitly(recipe, stopped, capsys):
    assert main(_args(recipe, stopped, "--resume", "optim.lr=0.01")) == 2
    line = _one_line(capsys.readouterr().err)
    assert "optim.lr 0.003 -> 0.01" in line and "--allow-changes" in line
    assert not (stopped / "changes.jsonl").exists()

    assert main(_args(recipe, stopped, "--resume", "--allow-changes", "optim.lr=0.01")) == 0
    change = json.loads((stopped / "changes.jsonl").read_text())
    assert change["step"] == 6 and change["changes"] == {"optim.lr": [0.003, 0.01]}
    rows = [json.loads(x) for x in (stopped / "metrics.jsonl").read_text().splitlines()]
    lrs = {r["step"]: r["lr"] for r in rows if "lr" in r}
    assert lrs[6] == pytest.approx(0.003) and lrs[7] == pytest.approx(0.01)  # the new lr really took effect
    assert yaml.safe_load((stopped / "config.yaml").read_text())["optim"]["lr"] == 0.01


@pytest.mark.parametrize("override, key", [("train.batch_size=2", "train.batch_size"), ("train.seed=7", "train.seed"),
                                           ("model.n_layer=1", "model.n_layer")])
def test_resume_names_every_changed_key(recipe, stopped, override, key, capsys):
    assert main(_args(recipe, stopped, "--resume", override)) == 2
    assert key in _one_line(capsys.readouterr().err)


# --------------------------------------------------------------------------------------------------
# environment: a full disk, Ctrl-C; training: a diverging loss


def test_disk_full_in_a_checkpoint_keeps_the_previous_one(recipe, reference, stopped, monkeypatch, capsys):
    import patchbench.engine.checkpoint as ckpt

    real = ckpt.save_model

    def full_disk(model, path, *a, **k):
        real(model, path, *a, **k)  # part of the folder is written, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(ckpt, "save_model", full_disk)
    capsys.readouterr()
    assert main(_args(recipe, stopped, "--resume")) == 2
    line = _one_line(capsys.readouterr().err)
    assert "No space left on device" in line
    names = sorted(p.name for p in (stopped / "checkpoints").iterdir())
    assert names == ["latest.json", "step-000003", "step-000006"], names  # no temporary left behind
    assert verify_checkpoint(stopped / "checkpoints" / "step-000006") is None

    monkeypatch.setattr(ckpt, "save_model", real)  # space again: the run continues from step 6
    assert main(_args(recipe, stopped, "--resume")) == 0
    assert _curve(stopped) == _curve(reference)


def test_disk_full_inside_safetensors_is_one_line(recipe, stopped, monkeypatch, capsys):
    """What safetensors itself raises on a full disk (SafetensorError, not OSError) is still one line."""
    import safetensors
    import safetensors.torch

    def full(*a, **k):
        raise safetensors.SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                          'message: "No space left on device" })')

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    assert main(_args(recipe, stopped, "--resume")) == 2
    assert "No space left on device" in _one_line(capsys.readouterr().err)
    assert sorted(p.name for p in (stopped / "checkpoints").iterdir()) == ["latest.json", "step-000003", "step-000006"]


def test_permission_denied_is_one_line(recipe, stopped, monkeypatch, capsys):
    import patchbench.engine.checkpoint as ckpt

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(stopped / "checkpoints"))

    monkeypatch.setattr(ckpt, "save_model", denied)
    assert main(_args(recipe, stopped, "--resume")) == 2
    assert "Permission denied" in _one_line(capsys.readouterr().err)


def _interrupt(cmd: list[str], ready, cwd: Path) -> subprocess.CompletedProcess:
    """Start `cmd` in its own process group, wait for `ready()`, press Ctrl-C (SIGINT to the group)."""
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": SRC}, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.slow
def test_ctrl_c_on_train_is_one_line(recipe, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "patchbench", *_args(recipe, out, "train.max_steps=100000", "train.eval_every=1000")]
    done = _interrupt(cmd, lambda: (out / "checkpoints" / "latest.json").is_file(), tmp_path)
    assert done.returncode == 130
    assert _one_line(done.stderr) == "patchbench: interrupted"


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_on_study_is_one_line(recipe, tmp_path, jobs):
    study = tmp_path / "study"
    cmd = [sys.executable, "-m", "patchbench", "study", str(recipe), "--out", str(study), "--jobs", jobs,
           "train.max_steps=100000", "train.eval_every=1000"]
    started = int(jobs)  # with --jobs 2 both runs are under way when Ctrl-C comes
    done = _interrupt(cmd, lambda: len(list(study.glob("runs/*/checkpoints/latest.json"))) >= started, tmp_path)
    assert done.returncode == 130
    assert _one_line(done.stderr) == "patchbench: interrupted"
    assert not any(study.glob("runs/*/summary.json")) and not (study / "report.md").exists()
    for run in study.glob("runs/*"):  # every interrupted run resumes from its newest checkpoint
        assert RunDir(run).latest_checkpoint() is not None


def test_diverging_loss_stops_with_one_line_and_a_usable_checkpoint(recipe, reference, stopped, capsys):
    """lr 1e30 from step 6 on: the loss of step 8 is NaN, so the weights after step 7 are damaged. The run
    stops with one line; no checkpoint from step 7 on is resumable; step 6 is, and resuming it with the
    original lr replays the reference exactly."""
    status = main(_args(recipe, stopped, "--resume", "--allow-changes", "optim.lr=1e30", "optim.clip=0"))
    line = _one_line(capsys.readouterr().err)
    assert status == 2 and "became nan at step 8" in line and "step-000006" in line, line
    for row in (stopped / "metrics.jsonl").read_text().splitlines():
        json.loads(row, parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.jsonl"))
    assert RunDir(stopped).latest_checkpoint().name == "step-000006"
    assert main(_args(recipe, stopped, "--resume", "--allow-changes")) == 0  # back to the recipe's lr
    assert _curve(stopped) == _curve(reference)


def test_diverging_from_the_start_leaves_a_restartable_run(recipe, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(recipe, out, "optim.lr=1e30", "optim.clip=0", "train.checkpoint_every=1")) == 2
    assert "start over" in _one_line(capsys.readouterr().err)
    assert main(_args(recipe, out, "train.max_steps=3")) == 0  # restarts without --resume


def test_metrics_and_summary_are_strict_json(recipe, reference):
    strict = {"parse_constant": lambda c: pytest.fail(f"bare {c}")}
    for line in (reference / "metrics.jsonl").read_text().splitlines():
        json.loads(line, **strict)
    summary = json.loads((reference / "summary.json").read_text(), **strict)
    assert summary["train_examples_per_s"] > 0


def test_throughput_is_accumulated_across_resumes(recipe, stopped, reference):
    """A resumed run's throughput covers every segment: examples of all 12 steps over the whole train time."""
    from patchbench.durable import dumps_strict

    assert main(_args(recipe, stopped, "--resume")) == 0
    s = json.loads((stopped / "summary.json").read_text())
    examples = 12 * 4 * 2  # steps × batch × accumulation
    assert s["train_examples_per_s"] == pytest.approx(examples / s["train_time_s"])
    assert dumps_strict({"x": float("nan"), "y": [float("inf")]}) == '{"x": null, "y": [null]}'
