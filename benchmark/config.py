"""Effective run configuration: the profile's YAML, then the method's YAML (its defaults, then its
block for that profile), then `--set key=value` pairs. The result is a plain nested dict that a run
records. Each method keeps everything about itself in one file, `configs/methods/<name>.yaml`:

    T: 0.5                  # defaults, with their source in a comment
    profiles:
      smoke: {...}          # what a profile changes for this method
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, unknown_name

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PROFILES = ("smoke", "quick", "paper")
DEFAULT_PROFILE = "quick"
# Keys that say where or how a run happens, not what it computes: left out of the config hash.
_UNHASHED = ("device", "out", "progress")


def _read_yaml(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def deep_merge(base: dict, update: dict) -> dict:
    """A new dict: `update` laid over `base`, recursively for nested dicts."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_profile(name: str) -> dict:
    if name not in PROFILES:
        raise unknown_name("profile", name, PROFILES)
    return _read_yaml(CONFIG_DIR / "profiles" / f"{name}.yaml")


def method_config(method: str, profile: str) -> dict:
    """Hyper-parameters of one method under one profile; empty if the method has no YAML.

    An ablation preset registered as its own method has no YAML of its own: it is an entry of the
    `presets:` block of its family's YAML, whose `method:` part is laid over that YAML's settings."""
    path: Path | None = CONFIG_DIR / "methods" / f"{method}.yaml"
    preset: dict = {}
    if not path.exists():
        path, preset = _find_preset(method)
    raw = _read_yaml(path) if path is not None else {}
    per_profile = raw.pop("profiles", {}) or {}
    raw.pop("presets", None)
    return deep_merge(deep_merge(raw, per_profile.get(profile, {}) or {}), preset)


def _find_preset(method: str) -> tuple[Path | None, dict]:
    """(the YAML whose `presets:` names `method`, the preset's `method:` block), else (None, {})."""
    for path in sorted((CONFIG_DIR / "methods").glob("*.yaml")):
        presets = _read_yaml(path).get("presets") or {}
        if method in presets:
            return path, presets[method].get("method") or {}
    return None, {}


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """`["train.iterations=50", "method.T=0.5"]` -> {"train.iterations": 50, "method.T": 0.5}."""
    overrides = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"bad --set '{pair}'; expected key=value, e.g. train.iterations=100")
        overrides[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return overrides


def set_dotted(cfg: dict, key: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict; unknown keys are refused so a typo is not silently ignored."""
    node = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[:i]) or "the top level"
            valid = sorted(node) if isinstance(node, dict) else []
            raise unknown_name(f"config key under {where} in '{key}'", part, valid)
        if i == len(parts) - 1:
            node[part] = value
        else:
            node = node[part]


def build_config(
    profile: str,
    method: str,
    mode: str,
    dataset: str,
    labels: float,
    seed: int,
    overrides: dict[str, Any] | None = None,
    data_root: str | None = None,
    nbi: str | None = None,
) -> dict:
    """The effective config of one grid cell."""
    cfg = load_profile(profile)
    cfg["method"] = method_config(method, profile)
    cfg["method"]["name"] = method
    cfg["method"]["mode"] = mode
    cfg["profile"] = profile
    cfg["seed"] = int(seed)
    cfg["labels"] = float(labels)
    cfg["data"]["name"] = dataset
    if data_root is not None:
        cfg["data"]["root"] = str(data_root)
    if nbi is not None:
        cfg["data"]["nbi"] = nbi
    for key, value in (overrides or {}).items():
        set_dotted(cfg, key, value)
    return cfg


def config_hash(cfg: dict) -> str:
    """A short stable hash of what a run computes (where it runs and writes is left out)."""
    hashed = {k: v for k, v in cfg.items() if k not in _UNHASHED}
    text = json.dumps(hashed, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
