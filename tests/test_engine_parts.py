"""Optimizers, schedules, precision and device choices, and `patchbench list`."""

import itertools
import math
from pathlib import Path

import pytest
import torch

from patchbench.cli import main
from patchbench.config import OptimConfig
from patchbench.engine.distributed import DistInfo
from patchbench.engine.optim import build_optimizer, build_schedule
from patchbench.engine.trainer import index_batches, resolve_precision
from patchbench.errors import ConfigError


def _model():
    return torch.nn.Linear(4, 2)


def test_warmup_then_cosine_to_min_lr():
    cfg = OptimConfig(lr=1.0, schedule="cosine", warmup_steps=4, min_lr=0.1)
    opt = build_optimizer(_model(), cfg, torch.device("cpu"))
    sched = build_schedule(opt, cfg, total_steps=14)
    lrs = []
    for _ in range(14):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0)
    assert lrs[9] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in itertools.pairwise(lrs[4:])) and lrs[-1] > 0.1


def test_constant_schedule_and_optimizer_kinds():
    for name, cls in [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)]:
        opt = build_optimizer(_model(), OptimConfig(name=name, lr=0.5, momentum=0.9), torch.device("cpu"))
        assert isinstance(opt, cls) and opt.param_groups[0]["lr"] == 0.5
    sgd = build_optimizer(_model(), OptimConfig(name="sgd", momentum=0.9), torch.device("cpu"))
    assert sgd.param_groups[0]["momentum"] == 0.9
    with pytest.raises(ConfigError, match="valid optimizers: adamw, adam, sgd"):
        build_optimizer(_model(), OptimConfig(name="lamb"), torch.device("cpu"))
    with pytest.raises(ConfigError, match="valid schedules: constant, cosine"):
        build_schedule(sgd, OptimConfig(schedule="linear"), 10)


def test_frozen_model_has_nothing_to_train():
    m = _model()
    for p in m.parameters():
        p.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        build_optimizer(m, OptimConfig(), torch.device("cpu"))


def test_precision_choices_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) is None and resolve_precision("fp32", cpu) is None
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ConfigError, match="valid: auto, fp32, bf16, fp16"):
        resolve_precision("fp8", cpu)


def test_index_batches_cover_each_epoch_once_and_resume_mid_epoch():
    info = DistInfo()
    it = index_batches(10, 3, seed=1, start_micro=0, info=info)
    epoch0 = [next(it) for _ in range(3)]  # 10 // 3 = 3 full batches per epoch
    assert len({int(i) for b in epoch0 for i in b}) == 9
    epoch1 = [next(it) for _ in range(3)]
    assert any(not (a == b).all() for a, b in zip(epoch0, epoch1))  # a new permutation each epoch
    again = index_batches(10, 3, seed=1, start_micro=4, info=info)
    assert (next(again) == epoch1[1]).all()  # resuming at micro-batch 4 continues the same order
    # two ranks split each global micro-batch of 2 x 3
    r0 = next(index_batches(12, 3, 1, 0, DistInfo(0, 2, 0)))
    r1 = next(index_batches(12, 3, 1, 0, DistInfo(1, 2, 0)))
    one = next(index_batches(12, 6, 1, 0, info))
    assert sorted([*r0, *r1]) == sorted(one)


def test_list_shows_models_tasks_and_recipes(capsys):
    from pathlib import Path

    from patchbench import registry

    assert main(["list"]) == 0
    sections, current = {}, None
    for line in capsys.readouterr().out.splitlines():
        if not line.startswith(" "):
            current = sections.setdefault(line.rstrip(":"), [])
        else:
            current.append(line.split()[0])
    recipes = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
    assert sections["models"] == registry.list_models() and "pacing" in sections["models"]
    assert sections["tasks"] == registry.list_tasks() and "next_token" in sections["tasks"]
    assert sections["recipes"] == recipes and "pacing_vs_gpt2" in recipes


@pytest.mark.parametrize("form", [["--nproc", "3"], ["--nproc=3"]])
def test_nproc_relaunches_the_same_command_under_torchrun(monkeypatch, form):
    from patchbench import cli

    calls = []
    monkeypatch.setattr(cli, "run_torchrun", lambda cmd: calls.append(cmd) or 0)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    recipe = str(Path(__file__).resolve().parents[1] / "recipes" / "pacing_vs_gpt2.yaml")
    assert main(["train", recipe, "--preset", "cpu", *form, "--run", "gpt2", "train.max_steps=2"]) == 0
    (cmd,) = calls
    assert cmd[cmd.index("torch.distributed.run") + 2] == "--nproc-per-node=3"
    # the module's arguments after `--`: torchrun would take --run for its --run-path otherwise
    assert cmd[cmd.index("patchbench"):] == ["patchbench", "--", "train", recipe, "--preset", "cpu", "--run", "gpt2", "train.max_steps=2"]
    assert not any(a.startswith("--nproc=") or a == "--nproc" for a in cmd)
