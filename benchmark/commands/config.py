"""`config show`: the effective config a cell would run with (profile, method, `--set`), checked against
the schema; `config keys`: every key with its type, default, range and meaning (`benchmark.kit.schema`), and
the method's own keys (`methods/<family>/config.py`) with the values its YAML gives them under `--profile`."""
from __future__ import annotations

import argparse

import yaml

import methods
from benchmark.harness.config import build_config, parse_overrides
from benchmark.kit.config_files import DEFAULT_PROFILE, profile_config
from benchmark.kit.errors import unknown_name
from benchmark.kit.schema import describe

ACTIONS = ("show", "keys")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", help=f"one of {', '.join(ACTIONS)}")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="profile name (see configs/profiles)")
    parser.add_argument("--method", default="supervised", help="registered method name (see `list`)")
    parser.add_argument("--mode", default=None, help="single | multi | fused (default: the method's first)")
    parser.add_argument("--dataset", default=None, help="default: the profile's")
    parser.add_argument("--labels", default=5.0, type=float, help="label ratio in percent")
    parser.add_argument("--seed", default=0, type=int, help="seed")
    parser.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", help="as for `run`")


def main(args: argparse.Namespace) -> int:
    if args.action not in ACTIONS:
        raise unknown_name("config action", args.action, ACTIONS)
    spec = methods.get_method(args.method)
    mode = args.mode or spec.modes[0]
    if mode not in spec.modes:
        raise unknown_name(f"mode of {spec.name}", mode, spec.modes)
    labels = spec.fixed_labels if spec.fixed_labels is not None else args.labels
    dataset = args.dataset or profile_config(args.profile).data.name
    cfg = build_config(args.profile, spec.name, mode, dataset, labels, args.seed, parse_overrides(args.overrides))
    if args.action == "keys":  # the profile's keys with the schema's defaults, the method's with its values
        print("\n".join(describe() + describe(spec.config, "method.", cfg.method.model_dump())))
        return 0
    print(yaml.safe_dump(cfg.model_dump(exclude={"budget"}), sort_keys=False, default_flow_style=False), end="")
    return 0
