"""GPT-2: transformers' weights and layout, patchbench's forward.

The parameters live in a transformers `GPT2LMHeadModel` (`self.lm`), so checkpoints, `save_pretrained`,
FPT bodies (`model.lm.transformer`) and parameter counts are transformers' own. The forward is ours
(`forward_impl: patchbench`, the default) and computes the same function with fewer, larger kernels:

    ids (B, T) -> wte + wpe, dropout                              (B, T, C)
    block × L:  x + drop(proj(attn(ln_1(x))))                     one QKV matmul viewed as (3, B, nh, T, hs),
                x + drop(fc2(gelu_tanh(fc1(ln_2(x)))))            SDPA is_causal (no mask tensor is built)
    last block, last_token objective: queries, MLP and ln_f on the last position only
                (keys and values for every position)              (B, 1, C)
    ln_f, tied head                                               (B, V)  or (B, T, V) with all_positions

In the last block of a last-token forward only the last position reaches the output, so skipping the
others changes nothing but the work (and the counted FLOPs: fewer than a full GPT-2 forward).
`forward_impl: transformers` runs GPT2LMHeadModel's own forward (with `attn_implementation`) instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from patchbench.config import num
from patchbench.errors import ConfigError
from patchbench.registry import register_model


@dataclass
class GPT2Config:
    name: str = "gpt2"
    n_embd: int = num(768, ge=1)
    n_layer: int = num(12, ge=1)
    n_head: int = num(12, ge=1)
    n_positions: int = num(1024, ge=1)
    vocab_size: int = num(50257, ge=0)  # 0 = take the tokenizer's size
    dropout: float = num(0.1, ge=0, lt=1)  # residual, embedding and attention dropout (GPT-2's default)
    forward_impl: str = "patchbench"  # patchbench (own forward over the same weights) | transformers
    attn_implementation: str = "sdpa"  # transformers' attention (forward_impl: transformers): sdpa | eager

    def validate(self) -> None:
        if self.n_embd % self.n_head:
            raise ConfigError(f"model.n_embd: {self.n_embd} is not divisible by model.n_head={self.n_head}")
        if self.forward_impl not in ("patchbench", "transformers"):
            raise ConfigError(f"model.forward_impl: {self.forward_impl!r}; valid: patchbench, transformers")
        if self.attn_implementation not in ("sdpa", "eager"):
            raise ConfigError(f"model.attn_implementation: {self.attn_implementation!r}; valid: sdpa, eager")
        if self.forward_impl == "patchbench" and self.attn_implementation != "sdpa":
            raise ConfigError("model.attn_implementation: eager needs model.forward_impl=transformers (patchbench's forward uses SDPA)")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout: {self.dropout}; valid: 0 <= dropout < 1")


class GPT2(nn.Module):
    causal_lm = True

    def __init__(self, cfg: GPT2Config):
        super().__init__()
        from transformers import GPT2Config as HFConfig
        from transformers import GPT2LMHeadModel

        hf = HFConfig(
            n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head, n_positions=cfg.n_positions,
            vocab_size=cfg.vocab_size, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout, tie_word_embeddings=True,
            bos_token_id=cfg.vocab_size - 1, eos_token_id=cfg.vocab_size - 1,
        )
        hf._attn_implementation = cfg.attn_implementation
        self.lm = GPT2LMHeadModel(hf)  # lm_head.weight is wte.weight (tied)
        self.vocab_size, self.n_positions = cfg.vocab_size, cfg.n_positions
        self.n_head, self.dropout, self.eps = cfg.n_head, cfg.dropout, hf.layer_norm_epsilon
        self.own_forward = cfg.forward_impl == "patchbench"

    # ----------------------------------------------------------------------------------------------
    # patchbench's forward over transformers' parameters

    def _attention(self, attn: nn.Module, h: torch.Tensor, last_only: bool, p: float) -> torch.Tensor:
        """Causal self-attention of ln_1(x) = h (B, T, C); (B, T, C) out, or (B, 1, C) for the last query only."""
        B, T, C = h.shape
        nh, hs = self.n_head, C // self.n_head
        w, b = attn.c_attn.weight, attn.c_attn.bias  # (C, 3C), (3C,): transformers' Conv1D, y = x @ w + b
        if last_only:  # keys and values for every position, the query for the last one
            kv = torch.addmm(b[C:], h.reshape(B * T, C), w[:, C:])  # (B*T, 2C)
            k, v = kv.view(B, T, 2, nh, hs).permute(2, 0, 3, 1, 4).unbind(0)  # 2 × (B, nh, T, hs)
            q = torch.addmm(b[:C], h[:, -1], w[:, :C]).view(B, 1, nh, hs).transpose(1, 2)  # (B, nh, 1, hs)
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, nh, 1, hs): sees every key
            T = 1
        else:
            qkv = torch.addmm(b, h.reshape(B * T, C), w)  # (B*T, 3C)
            q, k, v = qkv.view(B, T, 3, nh, hs).permute(2, 0, 3, 1, 4).unbind(0)  # 3 × (B, nh, T, hs)
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B * T, C)  # (B*T, C)
        return torch.addmm(attn.c_proj.bias, y, attn.c_proj.weight).view(B, T, C)

    def _mlp(self, mlp: nn.Module, h: torch.Tensor) -> torch.Tensor:
        B, T, C = h.shape
        u = torch.addmm(mlp.c_fc.bias, h.reshape(B * T, C), mlp.c_fc.weight)  # (B*T, 4C)
        u = F.gelu(u, approximate="tanh")  # transformers' gelu_new
        return torch.addmm(mlp.c_proj.bias, u, mlp.c_proj.weight).view(B, T, C)

    def _block(self, blk: nn.Module, x: torch.Tensor, last_only: bool) -> torch.Tensor:
        p = self.dropout if self.training else 0.0
        C = x.shape[-1]
        h = F.layer_norm(x, (C,), blk.ln_1.weight, blk.ln_1.bias, self.eps)
        a = self._attention(blk.attn, h, last_only, p)
        if last_only:
            x = x[:, -1:]  # (B, 1, C): only the last position goes on
        x = x + F.dropout(a, p, self.training)
        h = F.layer_norm(x, (C,), blk.ln_2.weight, blk.ln_2.bias, self.eps)
        return x + F.dropout(self._mlp(blk.mlp, h), p, self.training)

    def forward_features(self, ids: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Final hidden states after ln_f: (B, T, C), or (B, C) for the last position when `last_only`."""
        body = self.lm.transformer
        T = ids.shape[1]
        if T > self.n_positions:
            raise ValueError(f"window of {T} tokens exceeds n_positions={self.n_positions}")
        pos = torch.arange(T, device=ids.device)
        x = F.dropout(body.wte(ids) + body.wpe(pos), self.dropout if self.training else 0.0, self.training)  # (B, T, C)
        n = len(body.h)
        for i, blk in enumerate(body.h):
            x = self._block(blk, x, last_only and i == n - 1)
        if last_only:
            x = x[:, -1]  # (B, C) (already one position unless there are no blocks)
        return F.layer_norm(x, (x.shape[-1],), body.ln_f.weight, body.ln_f.bias, self.eps)

    def forward_head(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.lm.transformer.wte.weight)  # tied unembedding: (..., V)

    def forward(self, ids: torch.Tensor, all_positions: bool = False) -> torch.Tensor:
        if not self.own_forward:
            h = self.lm.transformer(input_ids=ids).last_hidden_state  # (B, T, C)
            return self.lm.lm_head(h if all_positions else h[:, -1])  # (B, T, V) or (B, V)
        return self.forward_head(self.forward_features(ids, last_only=not all_positions))


@register_model("gpt2", config=GPT2Config, modality="tokens")
def gpt2(cfg: GPT2Config) -> GPT2:
    """GPT-2 (transformers' GPT2LMHeadModel weights, patchbench's SDPA forward, tied embeddings)."""
    return GPT2(cfg)
