"""What a benchmark measures: a model built from its registered config, one synthetic batch, the loss.

    BenchSpec -> configure (vocab, n_positions / image size) -> Subject (model, batch, targets)

Every model gets the same batch for the same spec (seeded), so two models, or a model and its
reference, see the same inputs.
"""

from __future__ import annotations

import dataclasses
import math
import types
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from patchbench import registry
from patchbench.errors import ConfigError

MODALITIES = ("tokens", "image")
OBJECTIVES = ("last_token", "causal_lm")

@dataclass
class BenchSpec:
    model: str
    overrides: dict[str, Any] = field(default_factory=dict)  # model config keys
    batch_size: int = 2
    seq_len: int = 0  # tokens models; 0 = the model's n_positions
    image_size: int = 0  # image models; 0 = the model's image_size
    dtype: str = "fp32"  # fp32 | bf16 | fp16 (autocast)
    compile: bool = False
    channels_last: bool = False
    warmup: int = 3
    steps: int = 5  # steps per timed window
    windows: int = 3
    inference: bool = True
    device: str = "auto"
    vocab_size: int = 50257  # used where the config says 0 (= "from the tokenizer")
    num_classes: int = 10  # used where an image config says 0 (= "from the task")
    peak: list | None = None  # [FLOP/s, source] measured once by the caller (CPU probe)
    peak_tflops: float = 0.0  # user override of the device peak
    threads: int = 0  # torch CPU threads; 0 = torch's default
    seed: int = 0
    objective: str = "last_token"  # last_token: (B,) targets, the token after the window | causal_lm: (B, T) targets


@dataclass
class Subject:
    """A model plus one synthetic batch; `loss` (below) is what the training step minimises."""

    name: str
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    modality: str
    items_per_sample: int  # tokens per sample (1 for images)
    shape: dict[str, int]  # seq_len or image_size
    notes: list[str] = field(default_factory=list)
    config: Any = None



# --------------------------------------------------------------------------------------------------
# configuration: a concrete vocab, n_positions that fits the sequence, the image size


def configure(spec: BenchSpec) -> tuple[Any, list[str]]:
    """The model config the benchmark builds, and notes on what was adapted and why."""
    entry = registry.get_model(spec.model)
    if entry.modality not in MODALITIES:
        raise ConfigError(f"bench: model {spec.model!r} eats {entry.modality!r}; bench supports {', '.join(MODALITIES)} models")
    values = dict(spec.overrides)
    notes: list[str] = []
    base = registry.model_config(spec.model, **values)
    if entry.modality == "tokens":
        if spec.image_size:
            raise ConfigError(f"--image-size: model {spec.model!r} eats tokens; use --seq-len")
        if getattr(base, "vocab_size", None) == 0:
            values["vocab_size"] = spec.vocab_size
            notes.append(f"vocab_size 0 (from tokenizer) -> {spec.vocab_size}")
        if spec.seq_len:
            return fit_positions(spec.model, values, spec.seq_len, notes)
        return registry.model_config(spec.model, **values), notes
    if spec.seq_len:
        raise ConfigError(f"--seq-len: model {spec.model!r} eats images; use --image-size")
    if getattr(base, "num_classes", None) == 0:
        values["num_classes"] = spec.num_classes
        notes.append(f"num_classes 0 (from the task) -> {spec.num_classes}")
    if spec.image_size:
        if not hasattr(base, "image_size"):
            raise ConfigError(f"--image-size: model {spec.model!r} has no image_size in its config")
        values["image_size"] = spec.image_size
    return registry.model_config(spec.model, **values), notes


def fit_positions(name: str, values: dict, seq_len: int, notes: list[str]) -> tuple[Any, list[str]]:
    """n_positions follows --seq-len. A model whose n_positions fixes a grid (PACING: ceil(sqrt(n))² cells,
    image side divisible by 32, n_embd a multiple of the final cells) gets the smallest valid square
    grid that holds seq_len tokens; the model pads the window to its grid, as it does in training."""
    if "n_positions" in values:
        if values["n_positions"] < seq_len:
            raise ConfigError(f"--seq-len {seq_len} exceeds n_positions={values['n_positions']} set with --set; raise it or drop it")
        return registry.model_config(name, **values), notes
    try:
        return registry.model_config(name, **{**values, "n_positions": seq_len}), notes
    except ConfigError as e:
        first_error = str(e)
    g = math.isqrt(seq_len - 1) + 1
    for side in range(g, 4 * g + 1):
        try:
            cfg = registry.model_config(name, **{**values, "n_positions": side * side})
        except ConfigError:
            continue
        px = f", {side * cfg.patch}px image" if hasattr(cfg, "patch") else ""
        notes.append(f"n_positions {seq_len} is not valid ({first_error}); using n_positions {side * side} "
                     f"({side}x{side} grid{px}) and {seq_len}-token windows padded by the model")
        return cfg, notes
    raise ConfigError(f"--seq-len {seq_len}: no valid n_positions for {name} from {seq_len} to {(4 * g) ** 2} ({first_error})")


def build_subject(spec: BenchSpec, device: torch.device) -> Subject:
    cfg, notes = configure(spec)
    modality = registry.get_model(spec.model).modality
    torch.manual_seed(spec.seed)
    model = registry.create_model(cfg)
    if modality == "image" and not getattr(cfg, "image_size", 0):
        size = model_image_size(model)
        notes.append(f"image_size 0 (from the task) -> {size} (the model's default)")
        if hasattr(cfg, "image_size"):
            cfg = dataclasses.replace(cfg, image_size=size)
        else:
            cfg = types.SimpleNamespace(**vars(cfg), image_size=size)
    if spec.objective not in OBJECTIVES:
        raise ConfigError(f"--objective {spec.objective!r}; valid: {', '.join(OBJECTIVES)}")
    if spec.objective == "causal_lm" and not getattr(model, "causal_lm", False):
        raise ConfigError(f"--objective causal_lm: model {spec.model!r} predicts only the token after the window; use last_token")
    x, y, shape, items = synthetic_batch(cfg, modality, spec.batch_size, spec.seq_len, causal=spec.objective == "causal_lm")
    return Subject(spec.model, model, x, y, modality, items, shape, notes, cfg)


def model_image_size(model: nn.Module, fallback: int = 224) -> int:
    """The input side a model was built for: its own attribute, timm's pretrained config, else 224."""
    if getattr(model, "image_size", 0):
        return int(model.image_size)
    size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
    return int(size[-1]) if size else fallback


def synthetic_batch(cfg: Any, modality: str, batch: int, seq_len: int = 0, seed: int = 1, causal: bool = False):
    """Token ids and next-token targets ((B,) the token after the window, or (B, T) the next token at every
    position when `causal`), or (B, C, S, S) images and class targets; the same for every model."""
    g = torch.Generator().manual_seed(seed)
    if modality == "tokens":
        T = seq_len or cfg.n_positions
        x = torch.randint(0, cfg.vocab_size, (batch, T), generator=g)  # (B, T)
        y = torch.randint(0, cfg.vocab_size, (batch, T) if causal else (batch,), generator=g)  # (B, T) or (B,)
        return x, y, {"seq_len": T}, T
    S, C = cfg.image_size, getattr(cfg, "in_chans", 0) or 3
    n_cls = getattr(cfg, "num_classes", 0)
    if not n_cls:
        raise ConfigError(f"model {cfg.name!r}: num_classes is 0; set it with --set num_classes=N")
    x = torch.randn(batch, C, S, S, generator=g)  # (B, C, S, S)
    y = torch.randint(0, n_cls, (batch,), generator=g)  # (B,)
    return x, y, {"image_size": S}, 1




def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The training loss in fp32: (B,) targets score the model's (B, K) output (the token after the window,
    or the class); (B, T) targets score every position of a causal LM's (B, T, V) logits."""
    if y.dim() == 2:
        logits = model(x, all_positions=True)  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
    return F.cross_entropy(model(x).float(), y)
