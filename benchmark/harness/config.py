"""Effective run configuration of one grid cell: the schema's defaults (`benchmark.kit.schema`), the
profile's YAML (a small delta over them), the method's YAML (its values, then its block for that profile),
then `--set key=value` pairs; checked against the typed schema at each step, before any cell starts. The
values are laid over each other as nested dicts; the result is the typed `RunConfig` every floor reads, and its
plain form (`RunConfig.plain`) is what a run records.
"""
from __future__ import annotations

from typing import Any

import yaml

import methods
from benchmark.kit.config_files import load_profile, method_config
from benchmark.kit.errors import ConfigError, unknown_name
from benchmark.kit.files import stable_hash
from benchmark.kit.runtime import resolve_device
from benchmark.kit.schema import DataConfig, ProfileConfig, RunConfig, checked, declared, validate

# Keys that say where or how a run happens, not what it computes: left out of the config hash.
_UNHASHED = ("device", "out", "progress", "runtime.device")  # dotted: `runtime.device` is where a cell runs


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
    """`benchmark.kit.schema.declared` of the key in the schema of `cfg`: its profile's sections, and under
    `method` its method's own."""
    if parts[0] != "method":
        return declared(ProfileConfig, ".".join(parts))
    if len(parts) == 1 or not isinstance(cfg.get("method"), dict) or "name" not in cfg["method"]:
        return False
    return declared(methods.get_method(cfg["method"]["name"]).config, ".".join(parts[1:]))


def validate_config(cfg: dict, source: str) -> RunConfig:
    """A cell's config checked against the schema (the profile's sections and the method's own), each value
    in its declared type; a bad value is a one-line ConfigError naming `source` and the key."""
    schema = methods.get_method(cfg["method"]["name"]).config
    method = checked(schema, cfg["method"], source, prefix="method")
    return checked(RunConfig, {**cfg, "method": method}, source)


def config_values(
    profile: str,
    method: str,
    mode: str,
    dataset: str,
    labels: float,
    seed: int,
    data_root: str | None = None,
    nbi: str | None = None,
) -> dict:
    """The values of one grid cell's config, before `--set` overrides, as the nested dict they are laid over."""
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
        checked(DataConfig, cfg["data"], "--nbi", prefix="data")  # a bad --nbi is named as such, not as a --set
    return cfg


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
) -> RunConfig:
    """The effective config of one grid cell."""
    cfg = config_values(profile, method, mode, dataset, labels, seed, data_root, nbi)
    for key, value in (overrides or {}).items():
        set_dotted(cfg, key, value)
    return validate_config(cfg, "--set")


def config_hash(cfg: RunConfig) -> str:
    """A short stable hash of what a run computes: the `_UNHASHED` keys, where it runs (the record says which
    device a run used) and writes, are left out."""
    return stable_hash(_without(cfg.plain(), _UNHASHED), length=12)


def _without(tree: dict, keys: tuple[str, ...], prefix: str = "") -> dict:
    """`tree` less the dotted `keys`, at any depth."""
    return {k: _without(v, keys, f"{prefix}{k}.") if isinstance(v, dict) else v
            for k, v in tree.items() if f"{prefix}{k}" not in keys}


def with_device(overrides: dict[str, Any], device: str | None) -> dict[str, Any]:
    """`--device NAME` is `--set runtime.device=NAME`; a name that is unknown, or CUDA where torch sees none,
    ends here with one line, before anything runs."""
    if device is None:
        return overrides
    resolve_device(device)
    return {**overrides, "runtime.device": device}
