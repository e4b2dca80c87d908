"""The one contract every patchbench model keeps, and the parameter-count rule.

Next-token models (GPT-2, PACING):
    forward(ids: LongTensor (B, T), all_positions: bool = False) -> logits
        all_positions=False: (B, V), the distribution of the token after the window
        all_positions=True:  (B, T, V), causal-LM logits (only models with `causal_lm = True`)
    attributes: vocab_size, n_positions (longest window the model accepts), causal_lm

Image classifiers (issue: image studies) keep timm's contract: forward_features / forward_head.

Parameter counts follow one stated rule: every distinct tensor once (tied embeddings counted once),
buffers excluded; "trainable" = requires_grad.
"""

from __future__ import annotations

from torch import nn


def count_params(model: nn.Module) -> dict[str, int]:
    total = trainable = 0
    for p in model.parameters():  # .parameters() yields a tied tensor once
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return {"total": total, "trainable": trainable}


def model_bytes(model: nn.Module) -> int:
    """Bytes held by parameters and buffers (the seed's "memory usage of model")."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    bufs = sum(b.numel() * b.element_size() for b in model.buffers())
    return params + bufs
