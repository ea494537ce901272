"""Effective run configuration: the schema's defaults (`benchmark.schema`), the profile's YAML (a small
delta over them), the method's YAML (its values, then its block for that profile), then `--set key=value`
pairs; checked against the typed schema at each step, before any cell starts. The result is a plain
nested dict that a run records. Each method keeps everything about itself in one file,
`benchmark/configs/methods/<name>.yaml`:

    T: 0.5                  # values, with their source in a comment
    profiles:
      smoke: {...}          # what a profile changes for this method

The YAML files ship inside the package (`benchmark/configs/`, read through `importlib.resources`); a
folder named by `$MICS_BENCH_CONFIGS` with the same layout (`profiles/`, `methods/`) comes first, so a
user can add a profile or change a method's values without editing the installed package.
"""
from __future__ import annotations

import copy
import os
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .errors import ConfigError, unknown_name
from .files import stable_hash
from .schema import ProfileConfig, declared, validate

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

PROFILES = ("smoke", "quick", "paper")  # the shipped profiles
DEFAULT_PROFILE = "quick"
USER_CONFIGS = "MICS_BENCH_CONFIGS"  # environment variable: a folder of the user's own configs
# Keys that say where or how a run happens, not what it computes: left out of the config hash.
_UNHASHED = ("device", "out", "progress")
# Top-level keys a cell's config has beyond the profile's sections: set from the grid cell.
_CELL_KEYS = ("method", "profile", "seed", "labels")


def config_dirs() -> list[Traversable]:
    """Where configs are looked up, first match wins: the user's folder, then the shipped one."""
    shipped = files("benchmark") / "configs"
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


def load_profile(name: str) -> dict:
    """Every profile key: the schema's defaults with the profile's YAML laid over them, checked."""
    file = config_file("profiles", f"{name}.yaml")
    if file is None:
        raise unknown_name("profile", name, profile_names())
    return validate(ProfileConfig, _read_yaml(file), source=str(file))


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
    """The `presets:` block of `benchmark/configs/methods/<family>.yaml`: name -> {description, method}."""
    file = config_file("methods", f"{family}.yaml")
    return (_read_yaml(file).get("presets") or {}) if file is not None else {}


def _find_preset(method: str) -> tuple[Traversable | None, dict]:
    """(the YAML whose `presets:` names `method`, the preset's `method:` block), else (None, {})."""
    for name in _names("methods"):
        presets = method_presets(name)
        if method in presets:
            return config_file("methods", f"{name}.yaml"), presets[method].get("method") or {}
    return None, {}


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """`["train.iterations=50", "method.T=0.5"]` -> {"train.iterations": 50, "method.T": 0.5}."""
    overrides = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"bad --set '{pair}'; expected key=value, e.g. train.iterations=100")
        try:
            overrides[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"bad --set '{pair}': the value is not valid YAML") from None
    return overrides


def set_dotted(cfg: dict, key: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict; unknown keys are refused so a typo is not silently ignored.

    A key the schema declares is set even where the config does not hold it yet (`config keys` lists it,
    so `--set` takes it): an overlay's keys (MICS's `method.finetune.train.*`) are there only once set,
    and a section a profile turns off (`init: null`) is made when one of its keys is set."""
    node = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, dict) and node.get(part) is None:
            kind = _declared(cfg, parts[: i + 1])
            if last and kind is True:
                node[part] = None
            elif not last and isinstance(kind, type):
                node[part] = {}
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[:i]) or "the top level"
            valid = sorted(node) if isinstance(node, dict) else []
            raise unknown_name(f"config key under {where} in '{key}'", part, valid)
        if i == len(parts) - 1:
            node[part] = value
        else:
            node = node[part]


def _declared(cfg: dict, parts: list[str]):
    """`benchmark.schema.declared` of the key in the schema of `cfg`: its profile's sections, and under
    `method` its method's own."""
    import methods

    if parts[0] != "method":
        return declared(ProfileConfig, ".".join(parts))
    if len(parts) == 1 or not isinstance(cfg.get("method"), dict) or "name" not in cfg["method"]:
        return False
    return declared(methods.get_method(cfg["method"]["name"]).config, ".".join(parts[1:]))


def validate_config(cfg: dict, source: str) -> dict:
    """A cell's config checked against the schema (the profile's sections and the method's own), with
    each value in its declared type; a bad value is a one-line ConfigError naming `source` and the key."""
    import methods

    sections = {key: value for key, value in cfg.items() if key not in _CELL_KEYS}
    checked = validate(ProfileConfig, sections, source)
    out = {**cfg, **{key: checked[key] for key in sections}}
    if "method" in cfg:
        schema = methods.get_method(cfg["method"]["name"]).config
        out["method"] = validate(schema, cfg["method"], source, prefix="method")
    return out


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
    import methods

    cfg = load_profile(profile)
    settings, source = method_config(method, profile)
    schema = methods.get_method(method).config
    cfg["method"] = validate(schema, {**settings, "name": method, "mode": mode}, source, prefix="method")
    cfg["profile"] = profile
    cfg["seed"] = int(seed)
    cfg["labels"] = float(labels)
    cfg["data"]["name"] = dataset
    if data_root is not None:
        cfg["data"]["root"] = str(data_root)
    if nbi is not None:
        cfg["data"]["nbi"] = nbi
        cfg = validate_config(cfg, "--nbi")
    for key, value in (overrides or {}).items():
        set_dotted(cfg, key, value)
    return validate_config(cfg, "--set") if overrides else cfg


def config_hash(cfg: dict) -> str:
    """A short stable hash of what a run computes (where it runs and writes is left out)."""
    return stable_hash({k: v for k, v in cfg.items() if k not in _UNHASHED}, length=12)
