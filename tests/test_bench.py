"""The benchmark harness: FLOP counts against hand formulas, timing that excludes warm-up, the seed-style
PACING reference against patchbench's PACING, the peak table, the batch search and the CLI end to end."""

from __future__ import annotations

import json
import os
import time

import pytest
import torch
from torch import nn

from patchbench import registry
from patchbench.bench.harness import measure
from patchbench.bench.peaks import gpu_peak
from patchbench.bench.reference import HFGPT2Reference, SeedStylePacing
from patchbench.bench.subject import Subject
from patchbench.bench.sweep import largest_fitting
from patchbench.bench.timing import time_windows
from patchbench.cli import main
from patchbench.engine.flops import infer_flops_per_sample, train_flops_per_sample

TINY_GPT2 = {"vocab_size": 100, "n_positions": 32, "n_embd": 32, "n_layer": 2, "n_head": 2, "dropout": 0.0}
TINY_PACING = {"vocab_size": 100, "n_positions": 16, "patch": 8, "depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64]}
CPU = torch.device("cpu")


# --------------------------------------------------------------------------------------------------
# FLOPs


@pytest.mark.parametrize("impl", [{"forward_impl": "transformers", "attn_implementation": "sdpa"},
                                  {"forward_impl": "transformers", "attn_implementation": "eager"},
                                  {"forward_impl": "patchbench"}])
def test_gpt2_flops_match_the_formula(impl):
    """Per layer: qkv 2·B·T·C·3C + proj 2·B·T·C·C + MLP 2·(2·B·T·C·4C) = 24·B·T·C², attention
    QKᵀ and AV 2·(2·B·T·T·C) = 4·B·T²·C (full T×T, causal not discounted); head on the last position
    only: 2·B·C·V. patchbench's forward runs the last block for the last position only: keys and values
    4·B·T·C², the rest (q, proj, MLP) 20·B·C², attention of one query 4·B·T·C. Training = forward +
    backward = 3 × forward (every matmul's input needs a gradient)."""
    B, T, C, L, V = 2, 32, 32, 2, 100
    model = registry.create_model("gpt2", **TINY_GPT2, **impl)
    x, y = torch.randint(0, V, (B, T)), torch.randint(0, V, (B,))
    layer = 24 * B * T * C * C + 4 * B * T * T * C
    if impl["forward_impl"] == "patchbench":
        forward = (L - 1) * layer + 4 * B * T * C * C + 20 * B * C * C + 4 * B * T * C + 2 * B * C * V
    else:
        forward = L * layer + 2 * B * C * V
    assert infer_flops_per_sample(model, x) * B == forward  # sdpa on CPU needs our formula for its kernel
    assert train_flops_per_sample(model, x, y) * B == 3 * forward


def test_cnn_flops_match_the_formula():
    """conv k×k with g groups: 2·B·Cout·Hout·Wout·(Cin/g)·k². Backward: each needed gradient costs one
    forward: conv1 only needs its weight gradient (the image needs none) = 1×; the others need input and
    weight gradients = 2×. (torch's own formula ignores groups in the weight gradient: the depthwise
    conv would count 8× too much.)"""
    B = 3
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),  # (B, 8, 8, 8)
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),  # depthwise (B, 8, 8, 8)
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),  # (B, 16, 4, 4)
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )
    x, y = torch.randn(B, 3, 8, 8), torch.randint(0, 10, (B,))
    conv1 = 2 * B * 8 * 8 * 8 * 3 * 9
    depthwise = 2 * B * 8 * 8 * 8 * 1 * 9
    conv2 = 2 * B * 16 * 4 * 4 * 8 * 9
    linear = 2 * B * 16 * 10
    forward = conv1 + depthwise + conv2 + linear
    assert infer_flops_per_sample(model, x) * B == forward
    assert train_flops_per_sample(model, x, y) * B == forward + conv1 + 2 * (depthwise + conv2 + linear)


# --------------------------------------------------------------------------------------------------
# timing


class SlowStart(nn.Module):
    """A token model whose first `n_slow` forward calls sleep (like compilation or lazy init)."""

    def __init__(self, n_slow: int, sleep_s: float):
        super().__init__()
        self.vocab_size, self.n_positions = 10, 4
        self.emb = nn.Embedding(10, 10)
        self.calls, self.n_slow, self.sleep_s = 0, n_slow, sleep_s

    def forward(self, ids):
        self.calls += 1
        if self.calls <= self.n_slow:
            time.sleep(self.sleep_s)
        return self.emb(ids).mean(1)  # (B, V)


def _subject(model):
    return Subject("slow", model, torch.randint(0, 10, (2, 4)), torch.randint(0, 10, (2,)), "tokens", 4, {"seq_len": 4})


def test_timed_windows_exclude_warmup():
    sleep = 0.3
    r = measure(_subject(SlowStart(2, sleep)), CPU, dtype="fp32", compile=False, channels_last=False,
                warmup=2, steps=3, windows=3, inference=False)
    assert all(w >= sleep for w in r["train_warmup_s"])  # the slow calls happened, in the warm-up
    assert max(r["train_windows_s"]) < sleep / 3, r["train_windows_s"]
    # the same model without warm-up: the first window carries the sleeps (so the check above can fail)
    calls = SlowStart(2, sleep)
    t = time_windows(lambda: calls(torch.zeros(1, 4, dtype=torch.long)), warmup=0, steps=3, windows=3, sync=lambda: None)
    assert t["windows_s"][0] >= 2 * sleep / 3 and t["median_s"] < sleep / 3


# --------------------------------------------------------------------------------------------------
# references compute the same function


@pytest.mark.parametrize("extra", [{"readout_channels": 1}, {}, {"layout": "seed", "n_positions": 256, "patch": 4}])
def test_seed_style_pacing_matches_pacing(extra):
    torch.manual_seed(0)
    model = registry.create_model("pacing", **{**TINY_PACING, **extra}).eval()
    ref = SeedStylePacing(model).eval()
    assert ref.pre_head.out_channels == model.n_positions  # the seed's full readout
    for T in (model.n_positions, 5):  # full window and a short one the model pads
        x = torch.randint(0, 100, (2, T))
        with torch.no_grad():
            torch.testing.assert_close(ref(x), model(x), rtol=1e-4, atol=1e-5)


def test_hf_gpt2_reference_matches_gpt2():
    model = registry.create_model("gpt2", **TINY_GPT2).eval()
    ref = HFGPT2Reference(model).eval()
    assert ref.lm.config._attn_implementation == "eager"
    x = torch.randint(0, 100, (2, 32))
    with torch.no_grad():
        torch.testing.assert_close(ref(x), model(x), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# peaks and the batch search


@pytest.mark.parametrize("name,dtype,tflops", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.4), ("NVIDIA H100 PCIe", "bf16", 756.5), ("NVIDIA H200", "bf16", 989.4),
    ("NVIDIA A100-SXM4-80GB", "bf16", 312.0), ("NVIDIA A10", "fp16", 125.0), ("NVIDIA L4", "bf16", 121.0),
    ("NVIDIA L40S", "bf16", 362.0), ("NVIDIA GeForce RTX 4090", "fp32", 82.6), ("NVIDIA GeForce RTX 3090", "bf16", 71.0),
])
def test_gpu_peak_table(name, dtype, tflops):
    peak, source = gpu_peak(name, dtype, tf32=False)
    assert peak == pytest.approx(tflops * 1e12), source


def test_gpu_peak_unknown_and_tf32():
    assert gpu_peak("Imaginary GPU 9000", "bf16", tf32=False)[0] is None
    assert gpu_peak("NVIDIA A100-SXM4-40GB", "fp32", tf32=True)[0] == pytest.approx(156e12)
    assert gpu_peak("Tesla V100-SXM2-16GB", "bf16", tf32=False)[0] is None  # no bf16 tensor cores


@pytest.mark.parametrize("true_max,limit", [(37, 4096), (1, 64), (64, 64), (0, 8), (100, 70)])
def test_largest_fitting_batch(true_max, limit):
    tried = []

    def fits(b):
        tried.append(b)
        return b <= true_max

    found, at_limit = largest_fitting(fits, limit)
    assert found == min(true_max, limit) and at_limit == (true_max >= limit)
    assert len(tried) <= 2 * (limit.bit_length() + 1)


# --------------------------------------------------------------------------------------------------
# the command line


def _sets():
    return ["--set", "vocab_size=100", "--set", "gpt2.n_embd=32", "--set", "gpt2.n_layer=2", "--set", "gpt2.n_head=2",
            "--set", "gpt2.dropout=0.0", "--set", "pacing.patch=8", "--set", "pacing.depths=[1,1,1,1]",
            "--set", "pacing.dims=[8,16,32,64]"]


QUICK = ["--warmup", "1", "--steps", "1", "--windows", "2", "--peak-tflops", "0.05", "--threads", "1"]


@pytest.mark.slow
def test_bench_cli_with_reference(tmp_path):
    out = tmp_path / "b"
    assert main(["bench", "gpt2", "pacing", "--batch-size", "2", "--seq-len", "16", "--reference", "--in-process",
                 "--channels-last", *_sets(), *QUICK, "--out", str(out)]) == 0
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["gpt2", "pacing"]
    for r in rows:
        assert r["seq_len"] == 16 and r["train_samples_per_s"] > 0 and r["infer_samples_per_s"] > 0
        assert r["train_items_per_s"] == pytest.approx(16 * r["train_samples_per_s"])
        assert r["train_peak_rss_bytes"] > 0 and r["flops_train_per_sample"] > r["flops_infer_per_sample"] > 0
        assert r["train_mfu"] == pytest.approx(r["flops_train_per_sample"] * r["train_samples_per_s"] / 0.05e12)
        ref = r["reference"]
        assert ref["max_abs_diff"] < 1e-4  # same weights, same function
        assert ref["train_speedup"] == pytest.approx(r["train_samples_per_s"] / ref["train_samples_per_s"])
    assert rows[1]["reference"]["flops_infer_per_sample"] > rows[1]["flops_infer_per_sample"]  # the seed's full readout
    hf, nano = rows[0]["references"]  # GPT-2: transformers' model, then the nanoGPT-style step
    assert hf == rows[0]["reference"] and nano["name"].startswith("nanoGPT-style") and nano["max_abs_diff"] < 1e-4
    assert nano["params"] == rows[0]["params"]
    assert nano["train_speedup"] == pytest.approx(rows[0]["train_samples_per_s"] / nano["train_samples_per_s"])
    md = (out / "bench.md").read_text()
    assert "seed-style PACING" in md and "GPT2LMHeadModel" in md and "nanoGPT-style" in md


def test_bench_causal_lm_objective(tmp_path):
    out = tmp_path / "c"
    assert main(["bench", "gpt2", "--batch-size", "2", "--seq-len", "16", "--objective", "causal_lm", "--in-process",
                 "--no-inference", *_sets()[:10], *QUICK, "--out", str(out)]) == 0
    row = json.loads((out / "bench.json").read_text())["rows"][0]
    assert row["objective"] == "causal_lm"
    B, T, C, L, V = 1, 16, 32, 2, 100  # every position through every block, the head on every position
    assert row["flops_train_per_sample"] == 3 * (L * (24 * B * T * C * C + 4 * B * T * T * C) + 2 * B * T * C * V)


def test_nanogpt_style_reference_matches_gpt2():
    """Written from GPT-2's definition over patchbench's weights: the same logits, last position and every one."""
    from patchbench.bench.reference import NanoGPTStyle

    model = registry.create_model("gpt2", **TINY_GPT2).eval()
    ref = NanoGPTStyle(model).eval()
    assert sum(p.numel() for p in ref.parameters()) == sum(p.numel() for p in model.parameters())  # tied head
    x = torch.randint(0, 100, (2, 32))
    with torch.no_grad():
        torch.testing.assert_close(ref(x), model(x), rtol=0, atol=1e-5)
        torch.testing.assert_close(ref(x, all_positions=True), model(x, all_positions=True), rtol=0, atol=1e-5)


def test_bench_sweep_and_pacing_grid(tmp_path):
    """seq-len sweep: n_positions follows the swept length; PACING's moves to the next valid grid."""
    out = tmp_path / "s"
    assert main(["bench", "gpt2", "pacing", "--sweep", "seq-len", "16,32", "--batch-size", "2", "--no-inference",
                 "--in-process", *_sets(), *QUICK, "--out", str(out)]) == 0
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert {(r["model"], r["seq_len"]) for r in rows} == {("gpt2", 16), ("gpt2", 32), ("pacing", 16), ("pacing", 32)}
    by = {(r["model"], r["seq_len"]): r for r in rows}
    assert by["gpt2", 32]["config"]["n_positions"] == 32 and by["pacing", 16]["config"]["n_positions"] == 16
    assert by["pacing", 32]["config"]["n_positions"] == 64 and "8x8 grid" in by["pacing", 32]["notes"][0]
    assert (out / "sweep.png").stat().st_size > 10_000


@pytest.mark.slow
def test_bench_measures_in_a_fresh_process(tmp_path):
    out = tmp_path / "f"
    assert main(["bench", "gpt2", "--seq-len", "8", "--no-inference", *_sets()[:8], *QUICK, "--out", str(out)]) == 0
    (row,) = json.loads((out / "bench.json").read_text())["rows"]
    assert row["pid"] != os.getpid() and row["train_samples_per_s"] > 0


def test_bench_max_batch_in_process(tmp_path):
    out = tmp_path / "m"
    assert main(["bench", "gpt2", "--max-batch", "--max-batch-limit", "4", "--mem-budget", "64", "--seq-len", "8",
                 "--no-inference", "--in-process", *_sets()[:8], *QUICK, "--out", str(out)]) == 0
    (row,) = json.loads((out / "bench.json").read_text())["rows"]
    assert row["batch_size"] == 4 and row["max_batch_search"]["limit_reached"]
    assert [t["batch"] for t in row["max_batch_search"]["trials"]] == [1, 2, 4]


def test_bench_image_models_and_timm_references(tmp_path):
    out = tmp_path / "i"
    assert main(["bench", "vit", "convmixer", "--image-size", "32", "--reference", "--in-process", "--channels-last",
                 "--set", "dim=32", "--set", "depth=1", "--set", "patch=8", "--set", "vit.heads=2", *QUICK, "--out", str(out)]) == 0
    vit, mixer = json.loads((out / "bench.json").read_text())["rows"]
    assert vit["image_size"] == mixer["image_size"] == 32 and vit["item"] == "images"
    assert vit["config"]["num_classes"] == 10 and vit["train_items_per_s"] == vit["train_samples_per_s"]
    assert vit["reference"]["name"].startswith("timm VisionTransformer") and vit["reference"]["params"] == vit["params"]
    assert mixer["reference"]["max_abs_diff"] == 0.0  # patchbench's ConvMixer is timm's: same weights, same outputs


@pytest.mark.parametrize("argv,message", [
    (["bench", "nosuchmodel"], "unknown model"),
    (["bench", "gpt2", "--set", "pacing.patch=8"], "not one of the benchmarked models"),
    (["bench", "gpt2", "--set", "n_layers=2"], "model.n_layers: unknown key"),
    (["bench", "gpt2", "--image-size", "32"], "eats tokens"),
    (["bench", "gpt2", "--dtype", "fp16", "--device", "cpu"], "fp16 needs a CUDA device"),
    (["bench", "gpt2", "--sweep", "depth", "1,2"], "valid keys: seq-len, image-size, batch-size"),
    (["bench", "gpt2", "--sweep", "batch-size", "1,2", "--max-batch"], "choose one"),
    (["bench", "pacing", "--seq-len", "100", "--set", "n_positions=64"], "exceeds n_positions"),
    (["bench", "pacing", "--objective", "causal_lm", "--set", "patch=4", "--set", "n_positions=64", "--set", "depths=[1,1,1,1]",
      "--set", "dims=[8,16,32,64]", "--set", "vocab_size=50"], "predicts only the token after the window"),
])
def test_bench_bad_input_is_one_line(argv, message, capsys, tmp_path):
    assert main([*argv, "--in-process", "--out", str(tmp_path), "--peak-tflops", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


# --------------------------------------------------------------------------------------------------
# the engine's fast paths on CPU


@pytest.mark.slow
def test_engine_channels_last_trains_pacing(corpus, tmp_path):
    import yaml
    from conftest import tiny_text_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_text_recipe(corpus)))
    common = ["train", str(recipe), "--run", "pacing", "train.max_steps=2", "train.eval_every=2", "train.sample_tokens=0"]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--out", str(tmp_path / "b"), "train.channels_last=true"]) == 0
    rows = [[json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()] for d in "ab"]
    losses = [[r.get("train_loss", r.get("val_loss")) for r in run] for run in rows]
    assert len(losses[0]) == 3 and losses[0] == pytest.approx(losses[1], rel=1e-4)  # same math, other memory layout


# --------------------------------------------------------------------------------------------------
# --profile: the roofline account


@pytest.mark.parametrize("name,kw", [("pacing", TINY_PACING), ("pacing", {**TINY_PACING, "forward_impl": "timm"}), ("gpt2", TINY_GPT2)])
def test_profile_stages_compose_the_model(name, kw):
    """The stages, run one after another, are the model's forward; their FLOPs add up to the whole step's."""
    from patchbench.bench.roofline import model_stages, profile_step
    from patchbench.engine.flops import train_flops_per_sample

    torch.manual_seed(0)
    model = registry.create_model(name, **kw).eval()
    x, y = torch.randint(0, 100, (2, 16)), torch.randint(0, 100, (2,))
    h = x
    for _, fn in model_stages(name, model):
        h = fn(h)
    torch.testing.assert_close(h, model(x), rtol=0, atol=1e-6)
    rows = profile_step(name, model, x, y, peak=1e11, bandwidth=1e10, steps=1)
    assert sum(r["flops"] for r in rows) == train_flops_per_sample(model, x, y) * 2
    assert all(r["time_s"] > 0 for r in rows) and all(r["bytes"] > 0 for r in rows)
    assert {r["stage"] for r in rows} >= {"loss", "AdamW step"}


def test_bench_profile_cli(tmp_path):
    out = tmp_path / "p"
    assert main(["bench", "pacing", "--profile", "--in-process", "--batch-size", "2", "--seq-len", "16", *_sets()[10:],
                 "--set", "vocab_size=100", *QUICK, "--out", str(out)]) == 0
    md = (out / "profile.md").read_text()
    assert "stage 3 (1 blocks)" in md and "roofline bound" in md and "AdamW step" in md
