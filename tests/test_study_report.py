"""Verdicts with statistics, the claims table and the compute axes, on study directories made here (no training)."""

import csv
import json
import math

import numpy as np
import pytest
import yaml

from patchbench.studies.stats import sentence, welch

# --------------------------------------------------------------------------------------------------
# Welch


def test_welch_against_hand_computed_values():
    a, b = [6.30, 6.35, 6.28], [6.45, 6.42, 6.50]
    c = welch(a, b, "GPT-2", "PACING")
    # by hand: means 6.31 and 6.456667; variances 0.0013 and 0.001633; se² = 0.0013/3 + 0.001633/3 = 0.000977778
    assert c.diff == pytest.approx(6.31 - 6.4566667, abs=1e-6)
    se = math.sqrt(0.0013 / 3 + 0.0016333333 / 3)
    df = (se ** 2) ** 2 / ((0.0013 / 3) ** 2 / 2 + (0.0016333333 / 3) ** 2 / 2)
    assert c.df == pytest.approx(df, rel=1e-6) and df == pytest.approx(3.949, abs=1e-3)
    assert 2.776 < c.half_width / se < 2.80  # t(0.975): 2.776 at df 4, 3.182 at df 3; df 3.949 lies just above 2.776
    t = c.diff / se  # -4.691
    assert c.p == pytest.approx(0.00967, abs=2e-4)  # 2 * (1 - T_cdf(|t|, df)), from tables
    assert t == pytest.approx(-4.691, abs=1e-3)
    assert c.significant
    assert sentence(c, "val loss", higher_is_better=False) == "GPT-2 reaches lower val loss than PACING by 0.147 ± 0.087 (n=3, p=0.010)."
    assert sentence(c, "val accuracy", higher_is_better=True).startswith("PACING reaches higher val accuracy than GPT-2 by 0.147")


def test_overlapping_seeds_are_not_significant_and_one_seed_is_not_a_verdict():
    c = welch([0.80, 0.90, 0.85], [0.84, 0.86, 0.91], "fpt", "upt")
    assert not c.significant and c.p > 0.5
    assert "no significant difference (n=3;" in sentence(c, "val accuracy", True)
    one = welch([0.8], [0.9], "fpt", "upt")
    assert one.single and math.isnan(one.p)
    assert sentence(one, "val accuracy", True) == "fpt vs upt (val accuracy): 0.10 apart; single run, not a verdict (n=1)."


def test_identical_seeds_on_both_sides():
    assert not welch([1.0, 1.0], [1.0, 1.0]).significant
    assert welch([1.0, 1.0], [0.5, 0.5]).significant


# --------------------------------------------------------------------------------------------------
# a synthetic study directory


def _run(study, name, axes, finals, *, model="gpt2", task="bit_xor", metric="val_accuracy", higher=True, device="x86_64 CPU (2 threads)",
         precision="fp32", data=None, steps=40, rate=10.0, flops=1e6, curve=None):
    d = study / "runs" / name
    d.mkdir(parents=True)
    cfg = {"name": name, "task": {"name": task}, "data": data or {"n": 5, "patterns": 2},
           "model": {"name": model, "dropout": 0.0}, "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0},
           "train": {"batch_size": 4, "accum_steps": 1, "seed": axes.get("seed", 0)}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = []
    for s in range(1, steps + 1):
        rows.append({"step": s, "train_loss": 1.0 / s, "lr": 1e-3})
        if s % 10 == 0:
            value = curve(s) if curve else finals
            rows.append({"step": s, "val_loss": 1.0 / s, metric: value, "train_time_s": s / rate})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"name": name, "model": model, "task": task, "steps": steps, "params_total": 100, "params_trainable": 100,
               "model_bytes": 400, "peak_rss_bytes": 2**30, "train_examples_per_s": rate * 4, "train_items_per_s": rate * 8,
               "train_time_s": steps / rate, "time_per_epoch_s": 1.0, "final_metric": finals,
               "final_metric_name": f"mean of last 1 {metric}", "higher_is_better": higher, "device": device,
               "precision": precision, "world_size": 1, "torch": "2.14.1"}
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "flops.json").write_text(json.dumps({"train_flops_per_example": flops, "examples_per_step": 4, "counter": "test"}))


def _study(tmp_path, claims, runs):
    study = tmp_path / "study"
    axes = {}
    for name, ax, final, kw in runs:
        _run(study, name, ax, final, **kw)
        axes[name] = ax
    (study / "study.yaml").write_text(yaml.safe_dump({"name": "t", "preset": "converge", "claims": claims, "study": {"axes": axes}}))
    return study


def test_claims_table_holds_does_not_hold_and_not_comparable(tmp_path):
    from patchbench.studies.report import write_report

    runs = []
    for seed, (f, u) in enumerate([(1.0, 0.60), (1.0, 0.62), (0.99, 0.61)]):
        runs.append((f"xor-fpt-s{seed}", {"task": "xor", "variant": "fpt", "seed": seed}, f, {}))
        runs.append((f"xor-upt-s{seed}", {"task": "xor", "variant": "upt", "seed": seed}, u, {"rate": 20.0}))
    claims = [
        {"claim": "FPT solves Bit-XOR", "groups": [{"variant": "fpt", "task": "xor"}], "relation": "at_least", "value": 0.99,
         "claimed": "100%", "requires": {"data.n": 5}},
        {"claim": "FPT is close to full training", "groups": ["xor-fpt", "xor-upt"], "relation": "close", "tolerance": 0.02,
         "claimed": "100% vs 100%"},
        {"claim": "UPT is faster", "groups": ["xor-upt", "xor-fpt"], "quantity": "samples_per_s", "relation": "higher",
         "claimed": "2x", "requires": {"device": "cuda"}, "why": "the seed timed a GPU"},
        {"claim": "FPT beats UPT", "groups": ["xor-fpt", "xor-upt"], "relation": "higher", "claimed": "yes"},
        {"claim": "V-FPT", "groups": ["xor-vfpt", "xor-fpt"], "relation": "lower", "claimed": "-"},
    ]
    study = _study(tmp_path, claims, runs)
    md = write_report(study).read_text()
    table = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if line.startswith("| ") and "**" in line}
    assert "**holds**" in table["FPT solves Bit-XOR"]
    assert "**does not hold**" in table["FPT is close to full training"] and "gap 0.387" in table["FPT is close to full training"]
    speed = table["UPT is faster"]
    assert "**not comparable**" in speed and "device: x86_64 CPU (2 threads) here, cuda in the seed" in speed
    assert "the seed timed a GPU" in speed and "here it would read: holds" in speed
    assert "**holds**" in table["FPT beats UPT"]
    assert "**not comparable**" in table["V-FPT"] and "not run in this preset: xor-vfpt" in table["V-FPT"]
    # the verdict opens the report
    first = md.split("## Verdicts", 1)[1].strip().splitlines()[0]
    assert first.startswith("- xor-fpt reaches higher final val accuracy than xor-upt by 0.387")
    html = (study / "report.html").read_text()
    assert html.index("reaches higher final val accuracy") < html.index("<table>")


def test_claim_whose_data_differs_is_not_comparable(tmp_path):
    from patchbench.studies.report import write_report

    runs = [(f"a-s{s}", {"model": "a", "seed": s}, 1.0, {"data": {"n": 4}}) for s in range(2)]
    claims = [{"claim": "A solves it", "groups": ["a"], "relation": "at_least", "value": 0.99, "requires": {"data.n": 5}}]
    md = write_report(_study(tmp_path, claims, runs)).read_text()
    row = next(line for line in md.splitlines() if line.startswith("| A solves it"))
    assert "**not comparable**" in row and "data.n: 4 here, 5 in the seed" in row


def test_curves_csv_has_monotone_cumulative_time_and_flops(tmp_path):
    from patchbench.studies.report import write_report

    runs = [(f"{m}-s{s}", {"model": m, "seed": s}, 0.5, {"rate": 5.0 + s, "flops": f, "curve": lambda st: st / 100})
            for m, f in (("cnn", 2e6), ("vit", 5e6)) for s in range(2)]
    study = _study(tmp_path, [], runs)
    md = write_report(study).read_text()
    with open(study / "curves.csv") as fh:
        rows = list(csv.DictReader(fh))
    for run in {r["run"] for r in rows}:
        mine = [r for r in rows if r["run"] == run]
        steps = np.array([int(r["step"]) for r in mine])
        time = np.array([float(r["train_time_s"]) for r in mine])
        flops = np.array([float(r["train_flops"]) for r in mine])
        assert np.all(np.diff(steps) >= 0) and np.all(np.diff(time) >= 0) and np.all(np.diff(flops) >= 0)
        assert time[-1] > time[0] and flops[-1] > flops[0]
        per_step = 4 * (2e6 if run.startswith("cnn") else 5e6)
        assert flops[-1] == pytest.approx(steps[-1] * per_step)
    assert {r["group"] for r in rows} == {"cnn", "vit"}
    # compute-matched: the FLOPs budget is the smaller total (cnn: 40 steps × 4 × 2e6 = 3.2e8 -> vit step 16 -> 0.16)
    matched = md.split("## Compute-matched", 1)[1]
    row = next(line for line in matched.splitlines() if line.startswith("| vit |"))
    assert "0.1600" in row
    results = md.split("## Results", 1)[1]
    assert "| cnn | 2 | 0.5000 ± 0.0000 (+0.0%) | +0.1000 |" in results  # last quarter: 0.40 at step 40 - 0.30 at step 30
    assert "## Fairness" in md and "| cnn | none | adam, 0.001 (constant) |" in md and "share all of these settings" in md
    assert (study / "curves_val_accuracy.png").is_file() and (study / "curves_train.png").is_file()


def test_train_flops_per_example_counts_forward_and_backward():
    import torch

    from patchbench.studies.flops import train_flops_per_example

    class Task:  # the two methods the count uses: a batch of the first examples, and the training loss
        num_train = 10

        def __init__(self, input_grad: bool):
            self.input_grad = input_grad

        def batches(self, index_batches):
            for ib in index_batches:
                yield {"x": torch.ones(len(ib), 8, requires_grad=self.input_grad)}

        def train_loss(self, model, batch):
            return model(batch["x"]).sum()

    model = torch.nn.Linear(8, 4, bias=False)
    # per example: forward 2·8·4 = 64; backward: 64 for the weight gradient, 64 for the input's when it needs one
    assert train_flops_per_example(Task(False), model, n=4) == 128
    assert model.weight.grad is None  # gradients cleared
    assert train_flops_per_example(Task(True), model, n=4) == 192
    model.weight.requires_grad_(False)  # a frozen layer (FPT's body): no weight gradient to count
    assert train_flops_per_example(Task(True), model, n=4) == 128


def test_worker_threads_share_the_cores_and_a_users_setting_wins(monkeypatch):
    import os

    from patchbench.studies.study import worker_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert [worker_threads(j) for j in (1, 2, 3, 16)] == [8, 4, 2, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert worker_threads(2) == 3
