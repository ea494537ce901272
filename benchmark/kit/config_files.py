"""The shipped YAML configs and the user's own, as a store: where they are looked up, a profile's values
(the schema's defaults with its YAML laid over them) and a method's (its YAML, then its block for that
profile). Each method keeps everything about itself in one file, `configs/methods/<name>.yaml`:

    T: 0.5                  # values, with their source in a comment
    profiles:
      smoke: {...}          # what a profile changes for this method

The YAML files are the top-level `configs/` folder, shipped in the wheel as the package `configs` and read
through `importlib.resources`; a folder named by `$MICS_BENCH_CONFIGS` with the same layout (`profiles/`,
`methods/`) comes first, so a user can add a profile or change a method's values without editing the
installed package. Methods read
their presets here; a cell's whole config is built one floor up (`benchmark.harness.config`).
"""
from __future__ import annotations

import copy
import os
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from benchmark.kit.errors import ConfigError, unknown_name
from benchmark.kit.schema import ProfileConfig, checked

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

PROFILES = ("smoke", "quick", "paper")  # the shipped profiles
DEFAULT_PROFILE = "quick"
USER_CONFIGS = "MICS_BENCH_CONFIGS"  # environment variable: a folder of the user's own configs


def config_dirs() -> list[Traversable]:
    """Where configs are looked up, first match wins: the user's folder, then the shipped one."""
    shipped = files("configs")
    user = os.environ.get(USER_CONFIGS)
    return [Path(user), shipped] if user else [shipped]


def config_file(*parts: str) -> Traversable | None:
    """The first `configs/<parts...>` file found, else None."""
    for folder in config_dirs():
        candidate = folder.joinpath(*parts)
        if candidate.is_file():
            return candidate
    return None


def _names(kind: str) -> list[str]:
    found = set()
    for folder in config_dirs():
        sub = folder / kind
        if sub.is_dir():
            found |= {item.name[:-5] for item in sub.iterdir() if item.name.endswith(".yaml")}
    return sorted(found)


def _read_yaml(file: Traversable) -> dict:
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{file}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def deep_merge(base: dict, update: dict) -> dict:
    """A new dict: `update` laid over `base`, recursively for nested dicts."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def profile_names() -> list[str]:
    return _names("profiles")


def profile_config(name: str) -> ProfileConfig:
    """Every profile key: the schema's defaults with the profile's YAML laid over them, checked, as the typed
    sections every floor reads (`.data.name`, `.train.lr`)."""
    file = config_file("profiles", f"{name}.yaml")
    if file is None:
        raise unknown_name("profile", name, profile_names())
    return checked(ProfileConfig, _read_yaml(file), source=str(file))


def load_profile(name: str) -> dict:
    """`profile_config(name)` as plain nested dicts, for laying a method's values and `--set` overrides over it."""
    return profile_config(name).model_dump()


def method_config(method: str, profile: str) -> tuple[dict, str]:
    """(hyper-parameters of one method under one profile, the YAML they come from); empty if none.

    An ablation preset registered as its own method has no YAML of its own: it is an entry of the
    `presets:` block of its family's YAML, whose `method:` part is laid over that YAML's settings."""
    file = config_file("methods", f"{method}.yaml")
    preset: dict = {}
    if file is None:
        file, preset = _find_preset(method)
    if file is None:
        return {}, f"method {method}"
    raw = _read_yaml(file)
    per_profile = raw.pop("profiles", {}) or {}
    raw.pop("presets", None)
    return deep_merge(deep_merge(raw, per_profile.get(profile, {}) or {}), preset), str(file)


def method_presets(family: str) -> dict[str, dict]:
    """The `presets:` block of `configs/methods/<family>.yaml`: name -> {description, method}."""
    file = config_file("methods", f"{family}.yaml")
    return (_read_yaml(file).get("presets") or {}) if file is not None else {}


def _find_preset(method: str) -> tuple[Traversable | None, dict]:
    """(the YAML whose `presets:` names `method`, the preset's `method:` block), else (None, {})."""
    for name in _names("methods"):
        presets = method_presets(name)
        if method in presets:
            return config_file("methods", f"{name}.yaml"), presets[method].get("method") or {}
    return None, {}
