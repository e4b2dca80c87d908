"""The README's multi-process commands, as written there, with `--run`, on 2 gloo processes (CPU).

The torchrun lines are read out of README.md itself (so a README edit that breaks them fails here);
only the recipe, the output folder and the process count are substituted, and a free rendezvous port is
added so that parallel test sessions do not collide on torchrun's default port 29500."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_text_recipe

ROOT = Path(__file__).resolve().parents[1]
SRC = str(ROOT / "src")


def _readme_line(pattern: str) -> list[str]:
    """The first README line that matches `pattern`, as argv (comments stripped)."""
    for line in (ROOT / "README.md").read_text().splitlines():
        if re.search(pattern, line):
            return shlex.split(line.split("  #")[0])
    raise AssertionError(f"README.md has no line matching {pattern!r}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _substitute(argv: list[str], recipe: Path, out: Path) -> list[str]:
    subs = {"RECIPE.yaml": str(recipe)}
    argv = [subs.get(a, a) for a in argv]
    argv = [str(out) if a.startswith("runs/") else a for a in argv]
    for i, a in enumerate(argv[:-1]):
        if a in ("--nproc", "--nproc-per-node"):
            argv[i + 1] = "2"
    return argv


def _run(argv: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(argv, env=env, cwd=tmp, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture
def recipe(corpus, tmp_path):
    r = tiny_text_recipe(corpus)
    r["train"].update(batch_size=2, accum_steps=2, max_steps=4, eval_every=2, sample_tokens=4)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(r))
    return path


@pytest.mark.slow
def test_readme_nproc_line_with_run(recipe, tmp_path):
    argv = _substitute(_readme_line(r"^patchbench train .*--nproc"), recipe, tmp_path / "g")
    assert "--run" in argv
    proc = _run([sys.executable, "-m", "patchbench", *argv[1:]], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world 2" in proc.stdout and (tmp_path / "g" / "summary.json").is_file()
    assert json.loads((tmp_path / "g" / "summary.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_readme_torchrun_line_with_run(recipe, tmp_path):
    argv = _substitute(_readme_line(r"^torchrun --nproc-per-node"), recipe, tmp_path / "g")
    assert "--run" in argv
    torchrun = [sys.executable, "-m", "torch.distributed.run", f"--master-port={_free_port()}"]
    proc = _run([*torchrun, *argv[1:]], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world 2" in proc.stdout and (tmp_path / "g" / "summary.json").is_file()


@pytest.mark.slow
def test_nproc_dry_run_and_resume(recipe, tmp_path):
    base = [sys.executable, "-m", "patchbench", "train", str(recipe), "--run", "gpt2", "--nproc", "2"]
    proc = _run([*base, "--dry-run"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("dry run ok") == 1 and "KeyError" not in proc.stderr

    out = tmp_path / "g"
    proc = _run([*base, "--out", str(out), "train.stop_after_steps=2"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _run([*base, "--out", str(out), "--resume"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["resumed"] is True


@pytest.mark.slow
def test_nproc_worker_error_is_one_line(recipe, tmp_path):
    """A mistake the workers meet (here: --resume with nothing to resume) is one line, not torchrun's report."""
    proc = _run([sys.executable, "-m", "patchbench", "train", str(recipe), "--run", "gpt2", "--nproc", "2",
                 "--out", str(tmp_path / "none"), "--resume"], tmp_path)
    assert proc.returncode == 2
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "no checkpoint" in lines[0] and "Traceback" not in proc.stderr, proc.stderr[-3000:]
