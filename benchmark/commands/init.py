"""`init build`: pre-train a profile's backbone without labels on the generic corpus
(`benchmark.harness.init_weights`), the starting point every method of the profile loads with `model.init: suite`.
By default it writes the shipped file `benchmark/weights/<profile>.pt` and its provenance sidecar."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from benchmark.kit.config_files import PROFILES, profile_config
from benchmark.kit.errors import ConfigError
from benchmark.kit.runtime import code_version, configure_threads


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("build",), help="build: pre-train and write the weights")
    parser.add_argument("--profile", default="quick", help=f"whose model and init settings: {', '.join(PROFILES)}")
    parser.add_argument("--out", type=Path, default=None,
                        help="weights file to write (default: the shipped benchmark/weights/<profile>.pt)")


def main(args: argparse.Namespace) -> int:
    from benchmark.harness.init_weights import build, shipped_path

    cfg = profile_config(args.profile)
    if cfg.init is None:
        raise ConfigError(f"profile '{args.profile}' has no init section: it starts from "
                          f"model.init={cfg.model.init}, nothing to build")
    out = args.out or shipped_path(args.profile)
    configure_threads(cfg.runtime.threads)
    command = "python -m benchmark " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    path = build(cfg.model, cfg.init, cfg.data.image_size, out, command, code_version())
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0
