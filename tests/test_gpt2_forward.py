"""patchbench's GPT-2 forward computes transformers' GPT2LMHeadModel function on the same weights, and the
weights stay transformers' (save_pretrained / from_pretrained round trips, checkpoints, FPT bodies)."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2LMHeadModel

from patchbench import registry
from patchbench.config import ConfigError

TINY = {"vocab_size": 97, "n_positions": 24, "n_embd": 48, "n_layer": 3, "n_head": 4}


def _pair(dropout: float = 0.0):
    torch.manual_seed(0)
    ours = registry.create_model("gpt2", **TINY, dropout=dropout)
    ref = GPT2LMHeadModel(ours.lm.config)
    ref.config._attn_implementation = "eager"  # the plainest formulation: explicit softmax(QKᵀ)V
    ref.load_state_dict(ours.lm.state_dict())
    return ours, ref


@pytest.mark.parametrize("T", [24, 7, 1])
def test_logits_equal_transformers(T):
    ours, ref = _pair()
    ours.eval(), ref.eval()
    x = torch.randint(0, TINY["vocab_size"], (3, T))
    with torch.no_grad():
        full = ref(input_ids=x).logits  # (B, T, V)
        torch.testing.assert_close(ours(x, all_positions=True), full, rtol=0, atol=1e-5)
        torch.testing.assert_close(ours(x), full[:, -1], rtol=0, atol=1e-5)  # last-position path


def test_gradients_equal_transformers():
    """Training mode with dropout 0: the same loss and the same gradient for every parameter."""
    ours, ref = _pair()
    x, y = torch.randint(0, TINY["vocab_size"], (2, 24)), torch.randint(0, TINY["vocab_size"], (2,))
    loss = torch.nn.functional.cross_entropy(ours(x), y)
    ref_loss = torch.nn.functional.cross_entropy(ref(input_ids=x).logits[:, -1], y)
    loss.backward()
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-6)
    grads = dict(ref.named_parameters())
    for name, p in ours.lm.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-4, atol=1e-6, msg=name)


def test_dropout_is_active_in_training_only():
    ours, _ = _pair(dropout=0.5)
    x = torch.randint(0, TINY["vocab_size"], (2, 24))
    ours.train()
    torch.manual_seed(1)
    a = ours(x)
    torch.manual_seed(2)
    assert not torch.allclose(a, ours(x))
    ours.eval()
    torch.testing.assert_close(ours(x), ours(x), rtol=0, atol=0)


def test_save_pretrained_round_trip(tmp_path):
    """Ours -> save_pretrained -> transformers loads it; a transformers model's weights load into ours."""
    ours, _ = _pair()
    ours.eval()
    ours.lm.save_pretrained(tmp_path / "ours")
    back = GPT2LMHeadModel.from_pretrained(tmp_path / "ours").eval()
    x = torch.randint(0, TINY["vocab_size"], (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(back(input_ids=x).logits[:, -1], ours(x), rtol=0, atol=1e-5)
    torch.manual_seed(5)
    theirs = GPT2LMHeadModel(ours.lm.config)
    theirs.save_pretrained(tmp_path / "theirs")
    fresh = registry.create_model("gpt2", **TINY, dropout=0.0).eval()
    fresh.lm = GPT2LMHeadModel.from_pretrained(tmp_path / "theirs")
    fresh.lm.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), theirs(input_ids=x).logits[:, -1], rtol=0, atol=1e-5)


def test_transformers_forward_still_selectable():
    torch.manual_seed(0)
    a = registry.create_model("gpt2", **TINY, dropout=0.0).eval()
    b = registry.create_model("gpt2", **TINY, dropout=0.0, forward_impl="transformers", attn_implementation="eager").eval()
    b.load_state_dict(a.state_dict())
    x = torch.randint(0, TINY["vocab_size"], (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=1e-5)
    with pytest.raises(ConfigError, match="forward_impl"):
        registry.create_model("gpt2", **TINY, forward_impl="fast")
    with pytest.raises(ConfigError, match="forward_impl=transformers"):
        registry.create_model("gpt2", **TINY, attn_implementation="eager")


def test_no_attention_mask_is_materialised(monkeypatch):
    """SDPA is called with is_causal (or a single query) and never a mask tensor."""
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        calls.append((attn_mask, kw.get("is_causal", False), q.shape[-2]))
        return real(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    ours, _ = _pair()
    ours(torch.randint(0, TINY["vocab_size"], (2, 24)))
    assert len(calls) == TINY["n_layer"]
    assert all(mask is None for mask, _, _ in calls)
    assert [c[1] for c in calls] == [True] * (TINY["n_layer"] - 1) + [False]  # the last block: one query per row
    assert calls[-1][2] == 1
