"""Each option that restores a seed's behaviour, checked on tiny inputs against the seed's formula written
out again here (docs/seeds.md lists them): kzl's CIFAR-10 transform, the PACING seed's sampler, the V-FPT
positions of kzl and dl-project, Bit-XOR with one logit per bit and BCE, synthetic data without a held-out
cut, and the ListOps generator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import tiny_text_recipe
from test_image_data import write_cifar

from patchbench import registry
from patchbench.data import images as I
from patchbench.data import listops as L
from patchbench.data import synthetic
from patchbench.errors import ConfigError
from patchbench.recipe import build_run_config, expand_runs
from patchbench.tasks.sequence import TEST, TRAIN

KZL_MEAN = np.array([0.4914, 0.4822, 0.4465])  # universal_computation/datasets/cifar10.py
KZL_STD = np.array([0.2023, 0.1994, 0.2010])


def seq_task(name: str, data: dict, model: dict | None = None, batch: int = 4):
    cfg = build_run_config({"task": name, "data": data, "model": model or {"name": "lstm", "hidden": 8, "layers": 1},
                            "train": {"batch_size": batch, "accum_steps": 1}})
    return registry.get_task(name).builder(cfg), cfg


# --------------------------------------------------------------------------------------------------
# CIFAR-10: kzl's transform


def test_cifar_normalisation_is_kzls_formula():
    x = torch.rand(2, 3, 4, 4)
    want = (x.numpy() - KZL_MEAN[None, :, None, None]) / KZL_STD[None, :, None, None]
    np.testing.assert_allclose(I.cifar_normalize(x).numpy(), want, rtol=1e-5, atol=1e-6)


def test_cifar_augmentation_matches_the_seed_pipeline_step_by_step():
    """Pad 4 with zeros + crop 32, flip with p 1/2, rotate uniform in ±20° (nearest, zero fill): the same
    draws replayed through torchvision's own RandomCrop/flip/rotate arithmetic give the same pixels."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    x = torch.rand(6, 3, 32, 32)
    got = I.kzl_augment(x, np.random.default_rng(5))
    rng = np.random.default_rng(5)  # the draws, in kzl_augment's documented order
    tops, lefts, flips, angles = rng.integers(0, 9, 6), rng.integers(0, 9, 6), rng.random(6) < 0.5, rng.uniform(-20, 20, 6)
    for i in range(6):
        img = TF.crop(TF.pad(x[i], [4]), int(tops[i]), int(lefts[i]), 32, 32)  # torchvision's RandomCrop(32, padding=4)
        img = TF.hflip(img) if flips[i] else img
        img = TF.rotate(img, float(angles[i]), interpolation=InterpolationMode.NEAREST, fill=0.0)
        torch.testing.assert_close(got[i], img)


def test_cifar_augmentation_statistics():
    """Over many draws: about half the images flipped, every crop offset 0..8 used, rotations within ±20°."""
    rng = np.random.default_rng(0)
    ramp = torch.linspace(0.1, 1.0, 32).expand(1, 3, 32, 32).repeat(400, 1, 1, 1)  # brighter to the right, no zeros
    out = I.kzl_augment(ramp, rng)
    centre = out[:, 0, 16, 12:20]  # a row through the middle: rotation by ≤ 20° keeps its left-right order
    flipped = (centre[:, 0] > centre[:, -1]).float().mean().item()
    assert 0.4 < flipped < 0.6
    zero_cols = (out[:, 0, 16] == 0).sum(1)  # padding shows as zero columns at one side (plus rotation corners)
    assert zero_cols.max() <= 8 + 4 and (zero_cols == 0).any()
    assert torch.equal(I.kzl_augment(ramp[:4], np.random.default_rng(3)), I.kzl_augment(ramp[:4], np.random.default_rng(3)))


def test_cifar_patch_task_uses_kzls_transform_by_default(tmp_path):
    write_cifar(tmp_path, n=6)
    task, _ = seq_task("image_patches", {"dataset": "cifar10", "path": str(tmp_path), "patch_size": 4})
    assert task.transform == "kzl" and task.describe()["transform"] == "kzl"
    # held-out: only normalised, then cut into 4x4 patches in kzl's (p1 p2 c) order
    img = task.test.images[2].astype(np.float64) / 255.0  # (32, 32, 3)
    norm = (img - KZL_MEAN) / KZL_STD
    want = norm.reshape(8, 4, 8, 4, 3).transpose(0, 2, 1, 3, 4).reshape(64, 48)
    x, _ = task.example(TEST, 2)
    np.testing.assert_allclose(x, want, rtol=1e-5, atol=1e-5)
    # training batches are augmented, reproducibly, and differ from the plain normalised input
    ib = np.array([0, 3, 5, 1])
    b1, b2 = task.make_batch(ib), task.make_batch(ib)
    assert b1["x"].shape == (4, 64, 48) and torch.equal(b1["x"], b2["x"])
    plain = torch.from_numpy(np.stack([task.example(TRAIN, int(i))[0] for i in ib]))
    assert not torch.allclose(b1["x"], plain)
    got = next(task.batches(iter([ib])))
    torch.testing.assert_close(got["x"], b1["x"])
    off, _ = seq_task("image_patches", {"dataset": "cifar10", "path": str(tmp_path), "patch_size": 4, "transform": "none"})
    np.testing.assert_allclose(off.example(TEST, 2)[0], (img.reshape(8, 4, 8, 4, 3).transpose(0, 2, 1, 3, 4).reshape(64, 48)), atol=1e-6)
    mnist_like, _ = seq_task("image_patches", {"dataset": "digits", "patch_size": 4})
    assert mnist_like.transform == "none"


def test_image_classification_cifar_transform_and_refusals(tmp_path):
    from test_image_data import task_for

    write_cifar(tmp_path, n=4)
    task, _, _ = task_for({"dataset": "cifar10", "path": str(tmp_path)})
    assert task.transform == "kzl"
    raw = torch.from_numpy(task.val.images(slice(0, 2))).permute(0, 3, 1, 2).double() / 255
    want = (raw - torch.tensor(KZL_MEAN).view(1, 3, 1, 1)) / torch.tensor(KZL_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(task.to_tensor(task.val.images(slice(0, 2))).double(), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match=r"data\.hflip / data\.rotate: the kzl transform"):
        task_for({"dataset": "cifar10", "path": str(tmp_path), "hflip": True})
    with pytest.raises(ConfigError, match=r"data\.transform: 'random'; valid: auto, kzl, none"):
        task_for({"dataset": "cifar10", "path": str(tmp_path), "transform": "random"})
    with pytest.raises(ConfigError, match=r"needs 3-channel images; digits has 1"):
        task_for({"dataset": "digits", "transform": "kzl"})


# --------------------------------------------------------------------------------------------------
# sampling: the PACING seed's inference.py


def seed_sample_probs(logits: torch.Tensor, tokens: list[int], n: int = 50) -> torch.Tensor:
    """The seed's sample(), as a distribution: logits of the last two tokens and of 220 set to -100,
    then torch.multinomial over ones_like(topk(logits, n)) -> uniform over the top n ids."""
    logits = logits.clone()
    logits[tokens[-1]] = -100
    logits[tokens[-2]] = -100
    logits[220] = -100
    _, indices = torch.topk(logits, n)
    out = torch.zeros_like(logits)
    out[indices] = 1.0 / n
    return out


def test_seed_sampler_probabilities_on_fixed_peaked_logits():
    from patchbench.tasks.next_token import next_token_probs

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(300, generator=g)
    logits[7] = 12.0  # a peaked distribution: token 7 dominates
    logits[220], logits[3], logits[4] = 11.0, 10.0, 9.0  # the tokens the seed blocks rank high
    previous = [1, 3, 4]
    seed = next_token_probs(logits, 50, "seed", previous, blocked=220)
    torch.testing.assert_close(seed, seed_sample_probs(logits, previous))
    assert seed[7].item() == pytest.approx(1 / 50) and seed[[3, 4, 220]].sum() == 0
    soft = next_token_probs(logits, 50, "softmax", previous, blocked=220)
    top = torch.topk(logits, 50).values
    assert soft[7].item() == pytest.approx(math.exp(12.0) / torch.exp(top).sum().item(), rel=1e-5)
    assert soft[7] > 0.4 and soft[220] > 0  # softmax: the peak dominates and nothing is blocked
    assert soft.sum().item() == pytest.approx(1.0) and seed.sum().item() == pytest.approx(1.0)


def test_seed_sampler_never_repeats_the_last_two_tokens():
    from patchbench.tasks.next_token import sample_text

    class Tok:
        def encode(self, text):
            return type("E", (), {"ids": [5, 6]})()

        def decode(self, ids):
            return " " + " ".join(map(str, ids))

        def token_to_id(self, token):
            return 2

    class Sticky(torch.nn.Module):  # always prefers to repeat the previous token (60 ids: top 50 = all but 10)
        def forward(self, x):
            logits = -torch.arange(60, dtype=torch.float32)
            logits[x[0, -1]] = 100.0
            return logits[None]

    out = [int(t) for t in sample_text(Sticky(), Tok(), torch.device("cpu"), "p", 40, 50, 43, 4, [0, 1], "seed").split()[1:]]
    seq = [5, 6, *out]  # the prompt's ids, then the samples
    assert all(seq[i] not in (seq[i - 1], seq[i - 2], 2) for i in range(2, len(seq)))
    soft = [int(t) for t in sample_text(Sticky(), Tok(), torch.device("cpu"), "p", 10, 50, 43, 4, [0, 1], "softmax").split()[1:]]
    assert soft == [6] * 10  # the softmax sampler follows the peak


def test_sample_method_is_validated(corpus):
    from patchbench.tasks.next_token import NextTokenTask

    recipe = tiny_text_recipe(corpus)
    recipe["train"]["sample_method"] = "greedy"
    with pytest.raises(ConfigError, match=r"train\.sample_method: 'greedy'; valid: softmax, seed"):
        NextTokenTask(expand_runs(recipe)[0])


# --------------------------------------------------------------------------------------------------
# V-FPT positions


@pytest.fixture(scope="module")
def vit_body(tmp_path_factory):
    import transformers as T

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vit") / "vit"
    T.ViTModel(T.ViTConfig(image_size=16, patch_size=4, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=32)).save_pretrained(str(path))
    return str(path)


def vfpt(body: str, mode: str, readout: str, **kw):
    torch.manual_seed(1)
    return registry.create_model("fpt", body=body, input_kind="continuous", input_dim=6, output_dim=3,
                                 vfpt_positions=mode, readout=readout, **kw).eval()


def run_layers(model, h):
    for layer in model._vit_layers():
        out = layer(h)
        h = out[0] if isinstance(out, tuple) else out
    return model.body.layernorm(h)


def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_vfpt_seed_kzl_positions(vit_body):
    m = vfpt(vit_body, "seed_kzl", "last")
    assert m.positions.shape == (1, 1024, 16) and torch.count_nonzero(m.positions) == 0  # fresh, zero-initialised
    assert m.n_positions == 1024 and m.body.embeddings.cls_token is None and m.body.embeddings.position_embeddings is None
    body_trainable = {n for n in trainable(m) if n.startswith("body.")}
    assert "positions" in trainable(m) and all("layernorm" in n for n in body_trainable)
    assert m.param_counts["roles"]["pos"] == {"trainable": 1024 * 16, "total": 1024 * 16}
    x = torch.randn(2, 20, 6)  # more tokens than the ViT's own 16 positions
    with torch.no_grad():
        m.positions.normal_()
        want = m.head(run_layers(m, m.embed(x) + m.positions[:, :20])[:, -1])  # kzl: x + pos, blocks, norm, last token
        torch.testing.assert_close(m(x), want)
    with pytest.raises(ConfigError, match=r"model\.readout: vfpt_positions=seed_kzl has no CLS"):
        vfpt(vit_body, "seed_kzl", "cls")
    frozen = vfpt(vit_body, "seed_kzl", "last", freeze_pos=True)
    assert "positions" not in trainable(frozen)


def test_vfpt_seed_dlproject_positions(vit_body):
    m = vfpt(vit_body, "seed_dlproject", "cls")
    assert m.positions is None and not any("position" in n or "cls" in n for n, _ in m.named_parameters())
    assert torch.count_nonzero(m.zero_cls) == 0 and m.n_positions == 16
    x = torch.randn(2, 9, 6)
    with torch.no_grad():
        h = torch.cat([torch.zeros(2, 1, 16), m.embed(x)], dim=1)  # dl-project: zero CLS, zero (= no) positions
        torch.testing.assert_close(m(x), m.head(run_layers(m, h)[:, 0]))
        perm = torch.randperm(9)
        torch.testing.assert_close(m(x), m(x[:, perm]))  # no positions: the CLS readout ignores token order
    with pytest.raises(ConfigError, match=r"model\.readout: vfpt_positions=seed_dlproject reads its zero CLS"):
        vfpt(vit_body, "seed_dlproject", "last")


def test_vfpt_pretrained_positions_are_the_default(vit_body):
    m = vfpt(vit_body, "pretrained", "last")
    assert m.cfg.vfpt_positions == registry.model_config("fpt").vfpt_positions == "pretrained"
    emb = m.body.embeddings
    assert "body.embeddings.position_embeddings" in trainable(m) and "body.embeddings.cls_token" not in trainable(m)
    assert m.n_positions == emb.position_embeddings.shape[1] - 1 == 16
    x = torch.randn(2, 5, 6)
    with torch.no_grad():
        h = torch.cat([emb.cls_token.expand(2, -1, -1), m.embed(x)], dim=1) + emb.position_embeddings[:, :6]
        torch.testing.assert_close(m(x), m.head(run_layers(m, h)[:, -1]))


def test_vfpt_positions_refused_off_vit(tmp_path):
    import transformers as T

    path = tmp_path / "gpt2"
    T.GPT2Model(T.GPT2Config(n_embd=16, n_layer=1, n_head=2, n_positions=32, vocab_size=50)).save_pretrained(str(path))
    with pytest.raises(ConfigError, match=r"model\.vfpt_positions: seed_kzl applies to ViT bodies"):
        vfpt(str(path), "seed_kzl", "last")
    with pytest.raises(ConfigError, match=r"model\.vfpt_positions: 'kzl'; valid: pretrained, seed_kzl, seed_dlproject"):
        vfpt(str(path), "kzl", "last")


# --------------------------------------------------------------------------------------------------
# Bit-XOR: dl-project's one logit per bit with BCE; the held-out cut switched off


class Fixed(torch.nn.Module):
    """A model stub that returns fixed outputs, whatever its input."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out = out

    def forward(self, x, mask=None):
        return self.out[: x.shape[0]]


def test_bit_xor_bce_per_bit_loss_and_accuracy():
    task, cfg = seq_task("bit_xor", {"n": 4, "patterns": 2, "patch_size": 2, "loss": "bce_per_bit", "test_size": 8,
                                     "test_steps_per_iter": 0}, batch=8)
    assert task.io()["output_dim"] == 2 and task.prepare(cfg.model).output_dim == 2  # one logit per bit of a 2-bit token
    logits = torch.tensor([[[2.0, -1.0], [0.5, -3.0]]]).repeat(8, 1, 1)  # (B, n/p, p)
    batch = task.collate([task.example(TEST, i) for i in range(8)])
    y = batch["y"].float()  # (8, 4)
    z = logits.reshape(8, 4)
    want = -(y * torch.log(torch.sigmoid(z)) + (1 - y) * torch.log(1 - torch.sigmoid(z))).mean()
    torch.testing.assert_close(task.train_loss(Fixed(logits), batch), want)
    metrics = task.evaluate(Fixed(logits), torch.device("cpu"), lambda: torch.autocast("cpu", enabled=False))
    assert metrics["val_accuracy"] == pytest.approx(((z > 0).float() == y).float().mean().item())
    assert metrics["val_loss"] == pytest.approx(want.item(), rel=1e-5)
    ce, _ = seq_task("bit_xor", {"n": 4, "patterns": 2, "patch_size": 2})
    assert ce.io()["output_dim"] == 4  # kzl: two logits per bit (the default)
    with pytest.raises(ConfigError, match=r"data\.loss: 'mse'; valid: ce, bce_per_bit"):
        seq_task("bit_xor", {"loss": "mse"})


def test_synthetic_held_out_cut_can_be_switched_off():
    def inputs(task, split, n=400):
        return {task.example(split, i)[0].tobytes() for i in range(n)}

    cut, _ = seq_task("bit_xor", {"n": 2, "patterns": 2, "patch_size": 2, "test_fraction": 0.25})
    assert not inputs(cut, TRAIN) & inputs(cut, TEST)
    seeds, _ = seq_task("bit_xor", {"n": 2, "patterns": 2, "patch_size": 2, "test_fraction": 0.0})
    assert len(inputs(seeds, TRAIN)) == len(inputs(seeds, TEST)) == 16  # both splits see the whole input space
    dadd, _ = seq_task("digit_addition", {"n": 3, "test_fraction": 0.0})
    x, y = dadd.example(TEST, 0)
    assert x.shape == (3, 10) and int(y) == int(x.argmax(1).sum())
    with pytest.raises(ConfigError, match=r"data\.test_fraction: 1\.0 must be in \[0, 1\)"):
        seq_task("bit_xor", {"test_fraction": 1.0})
    assert synthetic.draw(synthetic.bit_xor(3, 2), 0, TEST, 5, 0.0, "x")[0].shape == (2, 3)


# --------------------------------------------------------------------------------------------------
# ListOps


@pytest.mark.parametrize("expr,value", [
    ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
    ("[MIN [MAX 3 5 ] 4 ]", 4),
    ("[SM 8 7 [MED 1 2 3 4 ] ]", 7),  # 8 + 7 + int(2.5) = 17 -> 7
    ("[MED 1 2 ]", 1),  # int(1.5): LRA truncates the median
    ("[MED 9 0 5 ]", 5),
    ("[SM [SM 9 9 ] [MAX 1 [MIN 8 6 ] ] ]", 4),  # 8 + 6 = 14 -> 4
    ("3", 3),
])
def test_listops_values_of_known_expressions(expr, value):
    assert L.evaluate(expr.split()) == value


def test_listops_rejects_malformed_expressions():
    for bad in ("[MAX 1 2", "1 2", "]", "[MAX ]", "[MUL 1 2 ]"):
        with pytest.raises(ValueError):
            L.evaluate(bad.split())


def test_listops_generator_limits_values_and_determinism():
    make = L.sampler(max_depth=4, max_args=5, min_length=10, max_length=60)
    for i in range(200):
        tokens, value = make(np.random.default_rng([0, i]))
        assert 10 < len(tokens) < 60 and L.depth_of(tokens) <= 4
        assert value == L.evaluate(tokens)  # the generator's value agrees with an independent stack machine
    a = [make(np.random.default_rng([3, i]))[0] for i in range(5)]
    b = [make(np.random.default_rng([3, i]))[0] for i in range(5)]
    c = [make(np.random.default_rng([4, i]))[0] for i in range(5)]
    assert a == b and a != c
    lra = L.sampler(10, 10, 500, 2000)  # LRA's settings
    tokens, value = lra(np.random.default_rng(0))
    assert 500 < len(tokens) < 2000 and L.depth_of(tokens) <= 10 and value == L.evaluate(tokens)
    with pytest.raises(ConfigError, match="no ListOps expression"):
        L.sampler(2, 2, 10, 20)(np.random.default_rng(0))  # depth 2 with 2 arguments has at most 4 symbols


def test_listops_task_padding_format_and_split():
    data = {"max_depth": 3, "max_args": 4, "min_length": 4, "max_length": 30, "max_len": 0, "train_size": 100, "test_size": 20}
    task, _ = seq_task("listops", data)
    assert task.io() == {"input_kind": "discrete", "vocab_size": 16, "output_dim": 10, "out_tokens": 0}
    assert L.VOCAB[L.PAD_ID] == "<pad>" and len(L.VOCAB) == 16
    items = [task.example(TRAIN, i) for i in range(6)]
    for ids, y in items:
        assert L.evaluate([L.VOCAB[i] for i in ids]) == int(y) and 4 < len(ids) < 30
    batch = task.collate(items)
    assert batch["x"].shape == batch["mask"].shape and batch["mask"].sum(1).tolist() == [len(x) for x, _ in items]
    again, _ = seq_task("listops", data)
    assert all(np.array_equal(again.example(TEST, i)[0], task.example(TEST, i)[0]) for i in range(5))
    # kzl's input: closing brackets dropped, cut to max_len, padded with 0 to max_len, no mask
    kzl, _ = seq_task("listops", {**data, "format": "seed_kzl", "padding": "seed_kzl", "max_len": 12})
    ids, y = kzl.example(TRAIN, 0)
    full = task.example(TRAIN, 0)[0]
    assert int(y) == int(items[0][1]) and len(ids) == 12 and L.VOCAB.index("]") not in ids
    kept = full[full != L.VOCAB.index("]")][:12]
    np.testing.assert_array_equal(ids[:len(kept)], kept)
    assert (ids[len(kept):] == L.PAD_ID).all() and "mask" not in kzl.collate([kzl.example(TRAIN, i) for i in range(3)])
    for bad, msg in (({"format": "lra"}, r"data\.format: 'lra'; valid: brackets, seed_kzl"),
                     ({"padding": "seed_kzl", "max_len": 0}, r"data\.padding: seed_kzl pads every expression to data\.max_len"),
                     ({"min_length": 30}, r"data\.min_length / data\.max_length")):
        with pytest.raises(ConfigError, match=msg):
            seq_task("listops", {**data, **bad})


def test_listops_trains_through_the_fpt_contract(tmp_path):
    """One short run of the registered task on a tiny GPT-2 body with masked padding (not a learning test)."""
    import transformers as T

    from patchbench.engine.trainer import train

    body = tmp_path / "gpt2"
    T.GPT2Model(T.GPT2Config(n_embd=16, n_layer=1, n_head=2, n_positions=64, vocab_size=50)).save_pretrained(str(body))
    cfg = build_run_config({
        "task": "listops",
        "data": {"max_depth": 3, "max_args": 3, "min_length": 4, "max_length": 20, "max_len": 0, "train_size": 64, "test_size": 16,
                 "test_steps_per_iter": 0},
        "model": {"name": "fpt", "body": str(body)},
        "train": {"batch_size": 8, "accum_steps": 1, "max_steps": 4, "eval_every": 2, "final_metric_window": 1, "progress": False,
                  "sample_tokens": 0},
    })
    summary = train(cfg, tmp_path / "run")
    assert summary["final_metric_name"] == "mean of last 1 val_accuracy" and 0.0 <= summary["final_metric"] <= 1.0


# --------------------------------------------------------------------------------------------------
# the recipes' faithful presets


def _runs(recipe: str, preset: str):
    from pathlib import Path

    from patchbench.recipe import load_recipe, resolve_recipe

    path = Path(__file__).resolve().parents[1] / "recipes" / f"{recipe}.yaml"
    return {r.name: r for r in expand_runs(resolve_recipe(load_recipe(path), preset, []))}


def test_full_presets_are_faithful_and_bf16_is_explicit():
    pvg = _runs("pacing_vs_gpt2", "full")
    assert pvg["gpt2"].model.dropout == 0.0 and all(r.train.precision == "fp32" and r.train.sample_method == "seed" for r in pvg.values())
    assert all(r.train.precision == "bf16" for r in _runs("pacing_vs_gpt2", "full_bf16").values())
    fpt = _runs("fpt_questions", "full")
    assert all(r.train.precision == "fp32" for r in fpt.values())
    assert fpt["fpt-digit_addition"].model.out_layers == [50] and fpt["fpt-digit_addition"].train.max_steps == 200 * 1000
    assert fpt["vfpt-cifar10"].model.vfpt_positions == "seed_dlproject" and fpt["vfpt-cifar10"].model.readout == "cls"
    assert {"fpt-listops", "upt-listops", "frt-listops", "vfpt-listops"} <= set(fpt)
    assert "fpt-listops" in _runs("fpt_questions", "cpu")
    assert all(r.data.transform == "none" for r in _runs("vit_vs_towervit", "full").values())  # the seed: ToTensor only
    assert all(r.train.precision == "fp16" for r in _runs("vit_x_convmixer", "full").values())  # the seed's AMP


def test_digit_addition_can_draw_the_seeds_digits():
    """dl-project's nalu.py: np.random.randint(0, 9) -> digits 0..8 in a one-hot of width 10."""
    seeds, _ = seq_task("digit_addition", {"n": 4, "digit_values": 9})
    digits = np.concatenate([seeds.example(TRAIN, i)[0].argmax(1) for i in range(300)])
    assert set(digits.tolist()) == set(range(9)) and seeds.example(TRAIN, 0)[0].shape == (4, 10)
    reg_cfg = build_run_config({"task": {"name": "digit_addition", "objective": "regression"}, "data": {"n": 4, "digit_values": 9},
                                "model": {"name": "lstm", "hidden": 8, "layers": 1}})
    reg = registry.get_task("digit_addition").builder(reg_cfg)
    assert reg.target_mean == pytest.approx(4 * 4.0) and reg.target_std == pytest.approx(math.sqrt(4 * 80 / 12))
    default, _ = seq_task("digit_addition", {"n": 4})
    assert set(np.concatenate([default.example(TRAIN, i)[0].argmax(1) for i in range(300)]).tolist()) == set(range(10))


def test_pyramid_vit_without_positions_is_the_seeds_model():
    """Notgard's ViT built a position table and never added it: its output ignores the patches' order."""
    torch.manual_seed(0)
    seed = registry.create_model("vit_pyramid", num_classes=10, add_positions=False).eval()
    fixed = registry.create_model("vit_pyramid", num_classes=10).eval()
    assert seed.pos_embed is None and fixed.pos_embed.shape == (1, 65, 64)
    assert sum(p.numel() for p in fixed.parameters()) - sum(p.numel() for p in seed.parameters()) == 65 * 64
    x = torch.rand(2, 3, 32, 32)
    swapped = x.clone()
    swapped[:, :, :4, :4], swapped[:, :, -4:, -4:] = x[:, :, -4:, -4:], x[:, :, :4, :4]  # exchange two patches
    with torch.no_grad():
        torch.testing.assert_close(seed(x), seed(swapped))
        assert not torch.allclose(fixed(x), fixed(swapped))


def test_cyp3a4_seed_padding_feeds_the_pads_and_reads_the_last_position(tmp_path):
    """dl-project: batches padded to their longest molecule, no mask, the output read at the last position."""
    from test_fpt_tasks import MOLS, _csv

    path = _csv(tmp_path / "m.csv", "smiles,label", [(s, str(i % 2)) for i, s in enumerate(MOLS)])
    task, _ = seq_task("cyp3a4", {"path": path, "split": "random", "padding": "seed_dlproject"})
    items = [task.example(TRAIN, i) for i in range(4)]
    batch = task.collate(items)
    assert "mask" not in batch and batch["x"].shape == (4, max(len(x) for x, _ in items))
    seen = []

    class LastPosition(torch.nn.Module):
        def forward(self, x, mask=None):
            seen.append(mask)
            return torch.zeros(x.shape[0], 2)

    task.train_loss(LastPosition(), batch)
    assert seen == [None]
    with pytest.raises(ConfigError, match=r"data\.padding: 'none'; valid: mask, seed_dlproject"):
        seq_task("cyp3a4", {"path": path, "padding": "none"})
