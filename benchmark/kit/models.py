"""The backbone every method of a profile shares: a timm Vision Transformer, and the one starting point
every method's copies of it load (`model.init`):

- `imagenet`: timm's ImageNet weights for `model.arch` (the `paper` profile, as USB's usb_cv configs and
  ALBEF start from ImageNet ViTs); `model.weights: PATH` reads them from a local file instead of the hub.
  Either way the file is read here, passed through timm's checkpoint filter of the architecture (which
  resamples the position embeddings to `img_size`) and must supply every weight but the head: timm's own
  loader drops the head when the class count differs and then loads without checking (a file of
  unrelated weights would leave the model random). Without a file, the hub's is taken from the Hugging
  Face cache when it is there, and the hub is asked only once it is known to answer.
- `suite`: label-free weights pre-trained by the suite itself on a generic image corpus
  (`python -m benchmark init build`; `benchmark/weights/` ships them for the CPU profiles), the stand-in
  for ImageNet weights on a machine with no downloads; `model.weights: PATH` names another such file.
- `random`: timm's random initialisation (the from-scratch runs).

Only the classifier head stays random in every case: it depends on the dataset's classes. Inputs are
normalised with the statistics the starting weights were trained with (`input_normalisation`)."""
from __future__ import annotations

import functools
import importlib
import json
from pathlib import Path

import timm
import torch
from torch import nn

from benchmark.kit.data.loaders import MEAN, STD
from benchmark.kit.errors import ConfigError
from benchmark.kit.files import file_sha256
from benchmark.kit.schema import ModelConfig

PROBE_TIMEOUT_S = 10  # how long the hub may take to answer before the machine counts as offline
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"  # benchmark/weights, shipped with the package


def architecture(model_cfg: ModelConfig) -> dict:
    """What a weights file must have been trained with to fit `model_cfg`: arch and its kwargs."""
    return {"arch": model_cfg.arch, "kwargs": dict(model_cfg.kwargs)}


def create_backbone(model_cfg: ModelConfig, num_classes: int) -> nn.Module:
    """`timm.create_model(arch, num_classes=..., **kwargs)` with the weights `model.init` names. `model_cfg` is
    a whole `model` section (`benchmark.kit.schema.ModelConfig`, where its defaults and allowed values live)."""
    arch, kwargs = model_cfg.arch, dict(model_cfg.kwargs)
    if arch not in timm.list_models():
        raise ConfigError(f"unknown timm model '{arch}' (model.arch); see timm.list_models()")
    init, weights = model_cfg.init, model_cfg.weights
    if init == "imagenet":
        return _imagenet_backbone(arch, kwargs, num_classes, weights)
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)
    if init == "suite":
        path = Path(weights) if weights else suite_weights_path(model_cfg)
        load_backbone_state(model, _read_state(str(path)), str(path))
    return model


def _imagenet_backbone(arch: str, kwargs: dict, num_classes: int, weights: str | None) -> nn.Module:
    """timm's ImageNet weights of `arch`, from `weights` or the hub, checked to fit (module docstring)."""
    path = weights or hub_weights(arch)
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)
    state = _read_state(str(path))
    checkpoint_filter = getattr(importlib.import_module(type(model).__module__), "checkpoint_filter_fn", None)
    if checkpoint_filter is not None:
        try:
            state = checkpoint_filter(state, model)
        except (RuntimeError, ValueError, KeyError) as err:
            raise ConfigError(f"model.weights: '{path}' is not a timm weights file for '{arch}' "
                              f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from err
    load_backbone_state(model, state, str(path))
    return model


def hub_weights(arch: str) -> str:
    """The local path of timm's default ImageNet weights of `arch`: from the Hugging Face cache, else
    downloaded, once the hub has answered one short request. Offline (no answer, or HF_HUB_OFFLINE), a
    one-line error names the file to fetch: asked straight away, the hub retries for about a minute first."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None or not cfg.hf_hub_id:
        raise ConfigError(f"timm has no hub weights for '{arch}'; set model.weights=PATH (or model.init=random)")
    filename = cfg.hf_hub_filename or "model.safetensors"
    cached = try_to_load_from_cache(cfg.hf_hub_id, filename)
    if isinstance(cached, str):
        return cached
    fetch = f"{filename} of https://huggingface.co/{cfg.hf_hub_id}"
    reason = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else None
    if reason is None:
        try:
            get_hf_file_metadata(hf_hub_url(cfg.hf_hub_id, filename), timeout=PROBE_TIMEOUT_S)
        except Exception as err:  # noqa: BLE001 - whatever stops this request stops the download
            reason = f"the hub did not answer: {type(err).__name__}"
    if reason is not None:
        raise ConfigError(f"ImageNet weights for '{arch}' are not on this machine and {reason}; download {fetch} "
                          "once and set model.weights=PATH (or model.init=random)")
    return hf_hub_download(cfg.hf_hub_id, filename)


def input_normalisation(model_cfg: ModelConfig) -> dict[str, list[float]]:
    """{"mean", "std"} of the inputs: `model.mean` / `model.std` where given, else those the starting weights
    were trained with. timm's ImageNet ViTs are not all trained with ImageNet's statistics (ViT-B/16's
    default weights take mean = std = 0.5), so they come from timm's pretrained config of the architecture
    (`resolve_data_config`), which describes the weights `model.weights` holds as well; the suite's own
    weights are trained with MEAN and STD (`benchmark.harness.init_weights`), and a random start has no statistics
    of its own: it gets the suite's too."""
    own = {"mean": list(MEAN), "std": list(STD)}
    if model_cfg.init == "imagenet":
        from timm.data import resolve_data_config

        data = resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg(model_cfg.arch).to_dict())
        own = {"mean": [float(v) for v in data["mean"]], "std": [float(v) for v in data["std"]]}
    return {key: list(getattr(model_cfg, key)) if getattr(model_cfg, key) is not None else value for key, value in own.items()}


def init_fingerprint(model_cfg: ModelConfig) -> str:
    """What a model's starting point is, for cache keys: the weights file's sha256, or the timm source."""
    init, weights = model_cfg.init, model_cfg.weights
    if init == "random":
        return "random"
    if init == "imagenet" and not weights:
        return f"timm:{model_cfg.arch}"
    path = Path(weights) if weights else suite_weights_path(model_cfg)
    return file_sha256(path) if path.is_file() else f"missing:{path}"


def suite_weights_path(model_cfg: ModelConfig) -> Path:
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
    """A weights file's state dict (torch or safetensors; a checkpoint's `model` or `state_dict` entry)."""
    if not Path(path).is_file():
        raise ConfigError(f"model.weights: no such file '{path}'")
    try:
        return timm.models.load_state_dict(path, use_ema=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise ConfigError(f"model.weights: '{path}' is not a readable weights file ({type(err).__name__})") from err


def load_backbone_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Every weight but the classifier head, which must fit the dataset's classes."""
    head = {k for k in model.state_dict() if k.startswith("head.")}
    own = model.state_dict()
    body = {k: v for k, v in state.items() if not k.startswith("head.")}
    mismatched = sorted(k for k, v in body.items() if k in own and own[k].shape != v.shape)
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in body.items() if k not in mismatched}, strict=False)
    missing = [k for k in own if k in set(missing) - head]  # in the model's order
    if missing:
        raise ConfigError(f"model.weights: '{source}' does not fit model.arch/model.kwargs: it lacks weight "
                          f"'{missing[0]}' ({len(missing)} of {len(own) - len(head)} missing)")
    if unexpected or mismatched:
        raise ConfigError(f"model.weights: '{source}' does not fit model.arch/model.kwargs "
                          f"(first differing weight: {(unexpected or mismatched)[0]})")
