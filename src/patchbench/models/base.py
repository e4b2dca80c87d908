"""The contracts patchbench models keep (one Protocol per modality), and the parameter-count rule.

Token models (GPT-2, PACING), `TokenModel`:
    forward(ids: LongTensor (B, T), all_positions: bool = False) -> logits
        all_positions=False: (B, V), the distribution of the token after the window
        all_positions=True:  (B, T, V), causal-LM logits (only models with `causal_lm = True`)
    attributes: vocab_size, n_positions (longest window the model accepts), causal_lm

Image classifiers, `ImageModel`: timm's contract (num_classes, forward_features / forward_head,
reset_classifier). Sequence models (FPT, LSTM), `SequenceModel`: n_positions and masks_padding
(whether padded variable-length inputs are masked). Tasks check a model against its Protocol.

Parameter counts follow one stated rule: every distinct tensor once (tied embeddings counted once),
buffers excluded; "trainable" = requires_grad.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class TokenModel(Protocol):
    vocab_size: int
    n_positions: int
    causal_lm: bool

    def forward(self, ids: torch.Tensor, all_positions: bool = False) -> torch.Tensor: ...


@runtime_checkable
class ImageModel(Protocol):
    num_classes: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor: ...

    def reset_classifier(self, num_classes: int, *args, **kwargs) -> None: ...


@runtime_checkable
class SequenceModel(Protocol):
    n_positions: int  # longest input in tokens
    masks_padding: bool

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor: ...


PROTOCOLS = {"tokens": TokenModel, "image": ImageModel, "sequence": SequenceModel}


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
