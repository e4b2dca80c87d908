"""GPT-2 through `transformers` (SDPA attention), behind patchbench's next-token contract."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from patchbench.errors import ConfigError
from patchbench.registry import register_model


@dataclass
class GPT2Config:
    name: str = "gpt2"
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_positions: int = 1024
    vocab_size: int = 50257  # 0 = take the tokenizer's size
    dropout: float = 0.1  # residual, embedding and attention dropout (GPT-2's default)
    attn_implementation: str = "sdpa"  # sdpa | eager

    def validate(self) -> None:
        if self.n_embd % self.n_head:
            raise ConfigError(f"model.n_embd: {self.n_embd} is not divisible by model.n_head={self.n_head}")
        if self.attn_implementation not in ("sdpa", "eager"):
            raise ConfigError(f"model.attn_implementation: {self.attn_implementation!r}; valid: sdpa, eager")


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

    def forward(self, ids: torch.Tensor, all_positions: bool = False) -> torch.Tensor:
        h = self.lm.transformer(input_ids=ids).last_hidden_state  # (B, T, C)
        if all_positions:
            return self.lm.lm_head(h)  # (B, T, V)
        return self.lm.lm_head(h[:, -1])  # (B, V): only the last position is decoded


@register_model("gpt2", config=GPT2Config, modality="tokens")
def gpt2(cfg: GPT2Config) -> GPT2:
    """GPT-2 (transformers GPT2LMHeadModel, SDPA attention, tied embeddings)."""
    return GPT2(cfg)
