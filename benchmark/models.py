"""The backbone every method of a profile shares: a timm Vision Transformer."""
from __future__ import annotations

import timm
from torch import nn

from .errors import ConfigError


def create_backbone(model_cfg: dict, num_classes: int) -> nn.Module:
    """`timm.create_model(arch, pretrained, num_classes, **kwargs)`.

    Pretrained weights come only from timm's local cache: nothing is downloaded at run time, and
    unreachable weights end with one line saying how to go on without them."""
    arch, kwargs = model_cfg["arch"], dict(model_cfg.get("kwargs") or {})
    if arch not in timm.list_models():
        raise ConfigError(f"unknown timm model '{arch}' (model.arch); see timm.list_models()")
    pretrained = bool(model_cfg.get("pretrained", False))
    try:
        return timm.create_model(arch, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except (OSError, RuntimeError, ValueError) as err:
        if not pretrained:
            raise
        raise ConfigError(
            f"pretrained weights for '{arch}' are not reachable ({type(err).__name__}); "
            "put them in the Hugging Face cache or run with --set model.pretrained=false"
        ) from err
