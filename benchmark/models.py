"""The backbone every method of a profile shares: a timm Vision Transformer, and the one starting point
every method's copies of it load (`model.init`):

- `imagenet`: timm's ImageNet weights for `model.arch` (the `paper` profile, as USB's usb_cv configs and
  ALBEF start from ImageNet ViTs); `model.weights: PATH` reads them from a local file instead of the hub.
- `suite`: label-free weights pre-trained by the suite itself on a generic image corpus
  (`python -m benchmark init build`; `benchmark/weights/` ships them for the CPU profiles), the stand-in
  for ImageNet weights on a machine with no downloads; `model.weights: PATH` names another such file.
- `random`: timm's random initialisation (the from-scratch runs).

Only the classifier head stays random in every case: it depends on the dataset's classes."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import timm
import torch
from torch import nn

from .errors import ConfigError
from .files import file_sha256

INITS = ("imagenet", "suite", "random")
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def architecture(model_cfg: dict) -> dict:
    """What a weights file must have been trained with to fit `model_cfg`: arch and its kwargs."""
    return {"arch": model_cfg["arch"], "kwargs": dict(model_cfg.get("kwargs") or {})}


def create_backbone(model_cfg: dict, num_classes: int) -> nn.Module:
    """`timm.create_model(arch, num_classes=..., **kwargs)` with the weights `model.init` names."""
    arch, kwargs = model_cfg["arch"], dict(model_cfg.get("kwargs") or {})
    if arch not in timm.list_models():
        raise ConfigError(f"unknown timm model '{arch}' (model.arch); see timm.list_models()")
    init, weights = model_cfg.get("init", "random"), model_cfg.get("weights")
    if init not in INITS:
        raise ConfigError(f"unknown model.init '{init}'; valid: {', '.join(INITS)}")
    if init == "imagenet":
        return _imagenet_backbone(arch, kwargs, num_classes, weights)
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)
    if init == "suite":
        path = Path(weights) if weights else suite_weights_path(model_cfg)
        load_backbone_state(model, _read_state(str(path)), str(path))
    return model


def _imagenet_backbone(arch: str, kwargs: dict, num_classes: int, weights: str | None) -> nn.Module:
    """timm's pretrained path; with `weights`, timm's own local-file mechanism (`pretrained_cfg_overlay`)."""
    overlay = None
    if weights:
        if not Path(weights).is_file():
            raise ConfigError(f"model.weights: no such file '{weights}'")
        overlay = {"file": str(weights)}
    try:
        return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay,
                                 num_classes=num_classes, **kwargs)
    except (OSError, RuntimeError, ValueError, KeyError) as err:
        if weights:
            raise ConfigError(f"model.weights: '{weights}' is not a timm weights file for '{arch}' "
                              f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from err
        raise ConfigError(f"ImageNet weights for '{arch}' could not be fetched; download them once and set "
                          "model.weights=PATH (or model.init=random)") from err


def init_fingerprint(model_cfg: dict) -> str:
    """What a model's starting point is, for cache keys: the weights file's sha256, or the timm source."""
    init, weights = model_cfg.get("init", "random"), model_cfg.get("weights")
    if init == "random":
        return "random"
    if init == "imagenet" and not weights:
        return f"timm:{model_cfg['arch']}"
    path = Path(weights) if weights else suite_weights_path(model_cfg)
    return file_sha256(path) if path.is_file() else f"missing:{path}"


def suite_weights_path(model_cfg: dict) -> Path:
    """The shipped label-free weights whose provenance sidecar names this very architecture."""
    wanted = architecture(model_cfg)
    for sidecar in sorted(WEIGHTS_DIR.glob("*.json")):
        meta = json.loads(sidecar.read_text())
        if meta.get("architecture") == wanted:
            return sidecar.with_suffix(".pt")
    raise ConfigError(f"no shipped label-free weights fit model {wanted['arch']} {wanted['kwargs']}; build them "
                      "with `python -m benchmark init build --profile NAME` and set model.weights=PATH, "
                      "or set model.init=random")


@functools.lru_cache(maxsize=4)
def _read_state(path: str) -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise ConfigError(f"model.weights: no such file '{path}'")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise ConfigError(f"model.weights: '{path}' is not a readable weights file ({type(err).__name__})") from err
    return state.get("model", state)


def load_backbone_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Every weight but the classifier head, which must fit the dataset's classes."""
    head = {k for k in model.state_dict() if k.startswith("head.")}
    own = model.state_dict()
    body = {k: v for k, v in state.items() if not k.startswith("head.")}
    mismatched = sorted(k for k, v in body.items() if k in own and own[k].shape != v.shape)
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in body.items() if k not in mismatched}, strict=False)
    missing = sorted(set(missing) - head)
    if missing or unexpected or mismatched:
        problem = (missing or unexpected or mismatched)[0]
        raise ConfigError(f"model.weights: '{source}' does not fit model.arch/model.kwargs "
                          f"(first differing weight: {problem})")
