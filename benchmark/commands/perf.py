"""`perf`: training throughput of every method against a bare PyTorch loop, the loader's throughput,
MICS's stage costs, peak memory and the grid's estimated wall time; printed and written to
`<reports>/perf.json` so the figures can be compared from one version to the next (docs/perf.md)."""
from __future__ import annotations

import argparse
from pathlib import Path

import methods

from ..config import DEFAULT_PROFILE, PROFILES, load_profile
from ..errors import ConfigError, unknown_name
from ..perf import estimate_grid, measure, write_record
from ..runner import cell_configs
from ..runtime import DEVICES, configure_threads, resolve_device
from .run import expand_grid

GRID_LABELS = "5,10,30,50"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help=f"one of {', '.join(PROFILES)}")
    parser.add_argument("--method", default="all", help="all (Table II) or comma-separated names (see `list`)")
    parser.add_argument("--modes", default=None, help="single,multi,fused (default: each method's own modes)")
    parser.add_argument("--steps", default=16, type=int,
                        help="timed steps per method, of ours and of the bare loop each")
    parser.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICES)}")
    parser.add_argument("--threads", default=None, type=int,
                        help="torch CPU threads (default: the profile's runtime.threads); on a machine shared with "
                             "other jobs, 1 gives figures that do not depend on their load (docs/perf.md)")
    parser.add_argument("--reports", default="reports", type=Path, help="folder of perf.json")


def _pairs(method: str, modes: str | None) -> list[tuple[str, str]]:
    if method == "all":
        specs = methods.list_methods("table2")
    else:
        specs = [methods.get_method(name.strip()) for name in dict.fromkeys(method.split(",")) if name.strip()]
    wanted = {m.strip() for m in modes.split(",") if m.strip()} if modes else None
    for m in sorted((wanted or set()) - set(methods.registry.MODES)):
        raise unknown_name("mode", m, methods.registry.MODES)
    pairs = [(s.name, m) for s in specs for m in s.modes if wanted is None or m in wanted]
    if not pairs:
        raise ConfigError("nothing to measure: no method runs in the modes asked for")
    return pairs


def main(args: argparse.Namespace) -> int:
    if args.profile not in PROFILES:
        raise unknown_name("profile", args.profile, PROFILES)
    if args.steps < 1:
        raise ConfigError(f"bad --steps {args.steps}; expected 1 or more")
    pairs = _pairs(args.method, args.modes)
    runtime = load_profile(args.profile)["runtime"]
    device = resolve_device(args.device if args.device != "auto" else runtime["device"])
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"bad --threads {args.threads}; expected 1 or more")
    configure_threads(args.threads or runtime.get("threads"))
    print(f"perf: profile {args.profile} on {device}, {len(pairs)} method/mode pairs, {args.steps} timed steps each "
          f"(ours and bare alternating)")
    record = measure(args.profile, pairs, device, args.steps)

    dataset = load_profile(args.profile)["data"]["name"]
    grid = argparse.Namespace(method="all", labels=GRID_LABELS, dataset=dataset, modes=None, seeds="0")
    cells = expand_grid(grid)
    configs = cell_configs(cells, args.profile, None, None, None)
    estimate = estimate_grid(cells, configs, record)
    record["grid_estimate_s"] = estimate.seconds
    command = f"run --method all --labels {GRID_LABELS} --dataset {dataset} --profile {args.profile}"
    record["grid"] = {"command": command, "cells": estimate.cells, "per_method_s": estimate.per_method,
                      "unmeasured": sorted(set(estimate.unmeasured))}
    print(f"peak resident memory of this process: {record['peak_rss_mb']:.0f} MB "
          f"(every method's steps and evaluation, MICS's stages: at least one quick run's peak)")
    print(f"runner overhead per cell: {record['cell_overhead_s']:.2f} s; "
          f"start-up and imports: {record['fixed_s']:.1f} s")
    print(f"grid `{record['grid']['command']}`: {estimate.line()}")
    print(f"load average before / after: {record['load_avg_before']} / {record['load_avg_after']}")
    print(f"wrote {write_record(record, args.reports)}")
    return 0
