"""DDP on CPU (gloo): 2 processes × batch 2 give the per-step losses of 1 process × batch 4; a 2-process
run stopped midway resumes on 1 process; only rank 0 writes into the run directory; accumulation
micro-steps skip the gradient all-reduce."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_text_recipe

from patchbench.cli import main

# Per-step losses of the same global batch agree to float rounding (gloo sums gradients in another
# order than one process's batched matmul does); 1e-5 absolute on losses near 5.6 is ~2e-6 relative.
LOSS_TOL = 1e-5

# Loaded by every process of the torchrun job (PYTHONPATH): records each rank's file-system writes.
AUDIT_HOOK = '''
import atexit, json, os, sys
_rank = os.environ.get("RANK")
if _rank is not None and os.environ.get("PB_AUDIT_DIR"):
    _writes = []
    def _hook(event, args):
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            mode, flags = args[1], args[2]
            writing = any(c in (mode or "") for c in "wax+") if mode is not None else bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if writing:
                _writes.append(os.path.abspath(os.fsdecode(args[0])))
        elif event in ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree"):
            _writes.append(os.path.abspath(os.fsdecode(args[0])) if isinstance(args[0], (str, bytes, os.PathLike)) else repr(args[0]))
    sys.addaudithook(_hook)
    atexit.register(lambda: open(os.path.join(os.environ["PB_AUDIT_DIR"], f"rank{_rank}.json"), "w").write(json.dumps(_writes)))
'''


def _losses(run_dir: Path) -> dict[tuple[int, str], float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {(r["step"], k): r[k] for r in rows for k in ("train_loss", "val_loss") if k in r}


@pytest.fixture
def recipe(corpus, tmp_path):
    r = tiny_text_recipe(corpus)
    r["runs"] = [x for x in r["runs"] if x["name"] == "gpt2"]
    r["runs"][0]["model"]["dropout"] = 0.0  # dropout masks are drawn per process: no exact comparison with them
    r["train"].update(batch_size=2, accum_steps=2, max_steps=6, eval_every=3, sample_tokens=4)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(r))
    return path


@pytest.mark.slow
def test_two_processes_match_one_and_resume_on_one(recipe, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    # 1 process, global batch 4 per micro-step (the reference curve)
    assert main(["train", str(recipe), "--out", str(one), "train.batch_size=4"]) == 0

    # 2 processes × batch 2 through `patchbench train --nproc 2`, stopped after 3 of 6 steps
    hooks, audit = tmp_path / "hooks", tmp_path / "audit"
    hooks.mkdir()
    audit.mkdir()
    (hooks / "sitecustomize.py").write_text(AUDIT_HOOK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")]), "PB_AUDIT_DIR": str(audit)}
    proc = subprocess.run([sys.executable, "-m", "patchbench", "train", str(recipe), "--nproc", "2", "--out", str(two),
                           "train.stop_after_steps=3"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world 2" in proc.stdout
    assert json.loads((two / "checkpoints" / "latest.json").read_text())["step"] == 3

    # only rank 0 wrote into the run directory (and the hook did see rank 0's writes)
    writes = {r: json.loads((audit / f"rank{r}.json").read_text()) for r in (0, 1)}
    inside = {r: [w for w in ws if w.startswith(str(two))] for r, ws in writes.items()}
    assert any(w.endswith("metrics.jsonl") for w in inside[0]) and any("checkpoints" in w for w in inside[0])
    assert inside[1] == [], inside[1][:5]

    # resume the 2-process run on 1 process at the same global batch
    assert main(["train", str(recipe), "--out", str(two), "--resume", "train.batch_size=4"]) == 0
    a, b = _losses(one), _losses(two)
    assert a.keys() == b.keys() and len(a) == 8  # 6 train losses + 2 validations
    worst = max(abs(a[k] - b[k]) for k in a)
    assert worst < LOSS_TOL, {k: (a[k], b[k]) for k in a}
    summary = json.loads((two / "summary.json").read_text())
    assert summary["resumed"] is True and summary["world_size"] == 1


NO_SYNC_SCRIPT = '''
import json, sys, torch, torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from patchbench.engine import distributed as D

info = D.init_from_env("cpu")
torch.manual_seed(0)
model = torch.nn.Linear(4, 1)
ddp = torch.nn.parallel.DistributedDataParallel(model)
calls = []
def counting_hook(state, bucket):
    calls.append(1)
    return allreduce_hook(state, bucket)
ddp.register_comm_hook(None, counting_hook)
g = torch.Generator().manual_seed(1)
data = torch.randn(2, 2, 2, 4, generator=g)  # (micro-steps, ranks, batch, features)
accum = data.shape[0]
for micro in range(accum):  # the engine's pattern: forward under maybe_no_sync, backward after it
    with D.maybe_no_sync(ddp, sync=micro == accum - 1):
        loss = ddp(data[micro, info.rank]).pow(2).mean() / accum
    loss.backward()
full = torch.nn.Linear(4, 1)
full.load_state_dict({k: v.detach() for k, v in model.state_dict().items()})
(full(data.reshape(accum, -1, 4)).pow(2).mean(dim=(1, 2)).sum() / accum).backward()  # one process, every example
err = max((p.grad - q.grad).abs().max().item() for p, q in zip(model.parameters(), full.parameters()))
if info.rank == 0:
    json.dump({"hook_calls": len(calls), "grad_err": err}, open(sys.argv[1], "w"))
D.shutdown(info)
'''


@pytest.mark.slow
def test_accumulation_micro_steps_skip_the_allreduce(tmp_path):
    """With 2 micro-steps per optimizer step, DDP all-reduces once (on the last), and the summed
    gradient equals the one-process gradient over all examples."""
    script, out = tmp_path / "nosync.py", tmp_path / "out.json"
    script.write_text(NO_SYNC_SCRIPT)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script), str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["hook_calls"] == 1  # one bucket, reduced once: the first micro-step did not sync
    assert result["grad_err"] < 1e-6
