"""Baselines from timm, trained from scratch: ResNet18, EfficientNetV2-B0 (`tf_efficientnetv2_b0`, the
seed's), and `timm` for any timm architecture by name.

Nothing downloads: `pretrained` weights only come from a local file named by `model.checkpoint`
(safetensors or a torch state dict, loaded weights-only by timm; a classifier of another size is
dropped and re-initialised, other input channels are adapted, as timm does for its own weights).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from patchbench.config import num
from patchbench.errors import ConfigError
from patchbench.registry import register_model


@dataclass
class TimmConfig:
    name: str = "timm"
    arch: str = "resnet18"  # any name in timm.list_models()
    num_classes: int = num(0, ge=0)  # 0 = the task's classes; built alone: no classifier (timm's convention)
    image_size: int = num(0, ge=0)  # 0 = the task's data.image_size; passed as img_size to archs that take one
    in_chans: int = num(0, ge=0)  # 0 = the task's image channels (3 when built without a task)
    drop_rate: float = num(0.0, ge=0, lt=1)
    checkpoint: str = ""  # a local weights file to start from; "" = random init
    kwargs: dict = field(default_factory=dict)  # extra timm.create_model keyword arguments

    def validate(self) -> None:
        import timm

        if not timm.is_model(self.arch):
            close = difflib.get_close_matches(self.arch, timm.list_models(), n=5)
            hint = f"close matches: {', '.join(close)}" if close else "see timm.list_models('pattern*')"
            raise ConfigError(f"model.arch: {self.arch!r} is not a timm model; {hint}")
        if self.checkpoint and not Path(self.checkpoint).expanduser().is_file():
            raise ConfigError(f"model.checkpoint: {self.checkpoint!r} is not a file; give a local .safetensors/.pth weights "
                              "file or leave it empty")


@dataclass
class ResNet18Config(TimmConfig):
    name: str = "resnet18"
    arch: str = "resnet18"

    def validate(self) -> None:
        if self.arch != "resnet18":
            raise ConfigError(f"model.arch: {self.arch!r}; model resnet18 is always resnet18 (use model.name=timm for others)")
        super().validate()


@dataclass
class EfficientNetV2B0Config(TimmConfig):
    name: str = "efficientnetv2_b0"
    arch: str = "tf_efficientnetv2_b0"

    def validate(self) -> None:
        if self.arch != "tf_efficientnetv2_b0":
            raise ConfigError(f"model.arch: {self.arch!r}; model efficientnetv2_b0 is always tf_efficientnetv2_b0 (use "
                              "model.name=timm for others)")
        super().validate()


def build_timm(cfg: TimmConfig) -> nn.Module:
    import timm

    kwargs: dict[str, Any] = {"num_classes": cfg.num_classes, "in_chans": cfg.in_chans or 3, "drop_rate": cfg.drop_rate, **cfg.kwargs}
    if cfg.checkpoint:  # timm's own loader: weights-only, head/in_chans adaptation
        path = str(Path(cfg.checkpoint).expanduser())
        overlay: dict[str, Any] = {"file": path}
        n = _checkpoint_classes(cfg.arch, path)
        if n is not None:  # timm keeps the classifier only when its size matches the pretrained config's
            overlay["num_classes"] = n
        kwargs.update(pretrained=True, pretrained_cfg_overlay=overlay)
    if cfg.image_size and "img_size" not in kwargs:
        try:  # transformers and other fixed-size archs need it; convnets do not accept it
            return timm.create_model(cfg.arch, img_size=cfg.image_size, **kwargs)
        except TypeError:
            pass
    return timm.create_model(cfg.arch, **kwargs)


def _checkpoint_classes(arch: str, path: str) -> int | None:
    """The classifier size stored in a weights file (None if the file has no recognisable classifier)."""
    import timm
    from timm.models import load_state_dict

    classifier = timm.models.get_pretrained_cfg_value(arch, "classifier")
    try:
        state = load_state_dict(path)  # weights_only
    except Exception as e:  # noqa: BLE001 - torch/safetensors raise several kinds on foreign files
        raise ConfigError(f"model.checkpoint: {path!r} cannot be read as weights ({type(e).__name__})") from None
    names = [classifier] if isinstance(classifier, str) else list(classifier or [])
    for name in names:
        weight = state.get(f"{name}.weight")
        if weight is not None:
            return int(weight.shape[0])
    return None


@register_model("resnet18", config=ResNet18Config, modality="image")
def resnet18(cfg: ResNet18Config) -> nn.Module:
    """ResNet18 (timm), from scratch."""
    return build_timm(cfg)


@register_model("efficientnetv2_b0", config=EfficientNetV2B0Config, modality="image")
def efficientnetv2_b0(cfg: EfficientNetV2B0Config) -> nn.Module:
    """EfficientNetV2-B0 (timm tf_efficientnetv2_b0), from scratch."""
    return build_timm(cfg)


@register_model("timm", config=TimmConfig, modality="image")
def timm_model(cfg: TimmConfig) -> nn.Module:
    """Any timm architecture by name (model.arch), from scratch or a local weights file."""
    return build_timm(cfg)
