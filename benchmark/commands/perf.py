"""`perf`: training throughput of every method against a bare PyTorch loop, the loader's throughput, the
stage costs of methods with several training loops (MICS), peak memory (`benchmark.harness.measure`) and the grid's
estimated wall time (`benchmark.harness.estimate`); printed and written to `<reports>/perf.json` so the figures can
be compared from one version to the next (docs/perf.md)."""
from __future__ import annotations

import argparse
from pathlib import Path

import methods
from benchmark.harness.config import parse_overrides, with_device
from benchmark.harness.estimate import estimate_grid
from benchmark.harness.grid import configured, expand_grid
from benchmark.harness.measure import SUPERVISED, measure, measured_configs
from benchmark.harness.perf_record import write_record
from benchmark.kit.config_files import DEFAULT_PROFILE, PROFILES, profile_config
from benchmark.kit.contract import MODES
from benchmark.kit.data import DATASETS, dataset_key
from benchmark.kit.errors import ConfigError, unknown_name
from benchmark.kit.runtime import DEVICES, configure_threads, resolve_device

GRID_LABELS = "5,10,30,50"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help=f"one of {', '.join(PROFILES)}")
    parser.add_argument("--method", default="all", help="all (Table II) or comma-separated names (see `list`)")
    parser.add_argument("--modes", default=None, help="single,multi,fused (default: each method's own modes)")
    parser.add_argument("--dataset", default=None, help=f"one of {', '.join(DATASETS)} (default: the profile's)")
    parser.add_argument("--data-root", default=None, help="folder of a real dataset, as for `run`")
    parser.add_argument("--nbi", default=None, help="NBI source for kvasir: spectral | generator:PATH | paired")
    parser.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                        help="override a config key for the measured runs and the estimate, as for `run`")
    parser.add_argument("--steps", default=16, type=int,
                        help="timed steps per method, of ours and of the bare loop each")
    parser.add_argument("--device", default=None,
                        help=f"one of {', '.join(DEVICES)}: the same as --set runtime.device=... (default: the profile's)")
    parser.add_argument("--threads", default=None, type=int,
                        help="torch CPU threads (default: the profile's runtime.threads); on a machine shared with "
                             "other jobs, 1 gives figures that do not depend on their load (docs/perf.md)")
    parser.add_argument("--reports", default="reports", type=Path, help="folder of perf.json")
    parser.add_argument("--estimate-dataset", default=None,
                        help="the dataset whose grid the estimate is for (default: the measured one), e.g. kvasir-v2 "
                             "measured on synthetic images: the official archive's sizes are used without a folder")


def _pairs(method: str, modes: str | None) -> list[tuple[str, str]]:
    if method == "all":
        specs = methods.list_methods("table2")
    else:
        specs = [methods.get_method(name.strip()) for name in dict.fromkeys(method.split(",")) if name.strip()]
    wanted = {m.strip() for m in modes.split(",") if m.strip()} if modes else None
    for m in sorted((wanted or set()) - set(MODES)):
        raise unknown_name("mode", m, MODES)
    pairs = [(s.name, m) for s in specs for m in s.modes if wanted is None or m in wanted]
    if not pairs:
        raise ConfigError("nothing to measure: no method runs in the modes asked for")
    return pairs


def main(args: argparse.Namespace) -> int:
    if args.steps < 1:
        raise ConfigError(f"bad --steps {args.steps}; expected 1 or more")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"bad --threads {args.threads}; expected 1 or more")
    pairs = _pairs(args.method, args.modes)
    dataset = args.dataset or profile_config(args.profile).data.name
    target = args.estimate_dataset or dataset
    for name in (dataset, target):
        if name not in DATASETS:
            raise unknown_name("dataset", name, DATASETS)
    overrides = with_device(parse_overrides(args.overrides), args.device)
    configs = measured_configs(args.profile, pairs, dataset, args.data_root, args.nbi, overrides)
    dataset_key(configs[SUPERVISED][0].data)  # a missing or unreadable folder ends here, before any measurement
    runtime = configs[SUPERVISED][0].runtime
    device = resolve_device(runtime.device)
    configure_threads(args.threads or runtime.threads)
    print(f"perf: profile {args.profile} on {dataset}, {device}, {len(pairs)} method/mode pairs, {args.steps} timed "
          f"steps each (ours and bare alternating)")
    record = measure(args.profile, pairs, configs, device, args.steps)

    root = args.data_root if target == dataset else None
    for group in ("all", "ablations"):
        cells = expand_grid(group, GRID_LABELS, target)
        estimate = estimate_grid(configured(cells, args.profile, overrides, root, args.nbi), record)
        command = f"run --method {group} --labels {GRID_LABELS} --dataset {target} --profile {args.profile}"
        for option, value in (("--data-root", root), ("--nbi", args.nbi)):
            command += f" {option} {value}" if value else ""
        command += "".join(f" --set {pair}" for pair in args.overrides or [])
        record.setdefault("grids", {})[group] = {"command": command, "seconds": estimate.seconds, "cells": estimate.cells,
                                                 "per_method_s": estimate.per_method,
                                                 "unmeasured": sorted(set(estimate.unmeasured)), "line": estimate.line()}
    record["grid_estimate_s"] = record["grids"]["all"]["seconds"]
    record["grid"] = record["grids"]["all"]
    print(f"peak resident memory of this process: {record['peak_rss_mb']:.0f} MB "
          f"(every method's steps and evaluation, MICS's stages: at least one run's peak)")
    print(f"runner overhead per cell: {record['cell_overhead_s']:.2f} s; "
          f"start-up and imports: {record['fixed_s']:.1f} s")
    for grid in record["grids"].values():
        print(f"grid `{grid['command']}`: {grid['line']}")
    print(f"load average before / after: {record['load_avg_before']} / {record['load_avg_after']}")
    print(f"wrote {write_record(record, args.reports)}")
    problems = cuda_path_problems(record) if device.type == "cuda" else []
    print("CUDA path: " + ("; ".join(problems) if problems else "as expected (autocast in half precision, no host "
                           "sync in a training step, the loader ahead of training)") if device.type == "cuda"
          else "CUDA path: not checked on the CPU")
    return 1 if problems else 0


def cuda_path_problems(record: dict) -> list[str]:
    """What a CUDA measurement shows of a path that is not the one meant: autocast not computing in half
    precision, a host sync inside a training step, a loader slower than training consumes."""
    problems = []
    for key, f in record["methods"].items():
        path = f["device_path"]
        if path["amp"] and not {"float16", "bfloat16"} & set(path["linear_dtypes"]):
            problems.append(f"{key}: AMP is on but its linear layers computed in {'/'.join(path['linear_dtypes'])}")
        for loop, syncs in path.get("host_syncs_per_step", {}).items():
            if syncs > 0:
                problems.append(f"{key}: {syncs:g} host syncs per {loop} step")
    for mode, loader in record.get("loader", {}).get("modes", {}).items():
        if loader["consumed_img_s"] and loader["img_s"] < loader["consumed_img_s"]:
            problems.append(f"loader {mode}: {loader['img_s']:.0f} img/s for {loader['consumed_img_s']:.0f} consumed")
    return problems
