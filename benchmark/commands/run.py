"""`run`: expand the grid and run every cell that has no finished record."""
from __future__ import annotations

import argparse
from pathlib import Path

import methods

from ..config import DEFAULT_PROFILE, PROFILES, parse_overrides
from ..data import DATASETS, check_ratio
from ..errors import ConfigError, unknown_name
from ..results import rebuild_results_csv
from ..runner import Cell, cell_config, run_cell
from ..runtime import DEVICES


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default="all", help="all (Table II), ablations, or comma-separated names (see `list`)")
    parser.add_argument("--labels", default="5,10,30,50", help="labeled percentages, e.g. 5,10,30,50")
    parser.add_argument("--dataset", default="synthetic", help=f"comma-separated: {', '.join(DATASETS)}")
    parser.add_argument("--data-root", default=None, help="folder of a real dataset")
    parser.add_argument("--nbi", default=None, help="NBI source for kvasir: spectral | generator:PATH | paired")
    parser.add_argument("--modes", default=None, help="single,multi,fused (default: each method's own modes)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help=f"one of {', '.join(PROFILES)}")
    parser.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICES)}")
    parser.add_argument("--out", default="results", type=Path, help="output folder")
    parser.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", help="config override, repeatable")
    parser.add_argument("--dry-run", action="store_true", help="print the cells and what is already done")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _numbers(text: str, kind: str, cast):
    try:
        return [cast(t) for t in _csv(text)]
    except ValueError:
        raise ConfigError(f"bad {kind} '{text}'; expected comma-separated numbers") from None


def expand_grid(args: argparse.Namespace) -> list[Cell]:
    """Methods x modes x label ratios x seeds x datasets, in that nesting order (datasets outermost)."""
    if args.method in ("all", "ablations"):
        names = [s.name for s in methods.list_methods("table2" if args.method == "all" else "ablation")]
    else:
        names = _csv(args.method)
    specs = [methods.get_method(n) for n in names]
    if not specs:
        raise ConfigError("no method to run; see `python -m benchmark list`")
    datasets = _csv(args.dataset)
    for d in datasets:
        if d not in DATASETS:
            raise unknown_name("dataset", d, DATASETS)
    ratios = [check_ratio(r) for r in _numbers(args.labels, "label ratios", float)]
    seeds = _numbers(args.seeds, "seeds", int)
    wanted = set(_csv(args.modes)) if args.modes else None
    if wanted:
        for m in wanted - set(methods.registry.MODES):
            raise unknown_name("mode", m, methods.registry.MODES)
    cells = []
    for dataset in datasets:
        for spec in specs:
            modes = [m for m in spec.modes if wanted is None or m in wanted]
            cell_ratios = [spec.fixed_labels] if spec.fixed_labels is not None else ratios
            for mode in modes:
                for labels in cell_ratios:
                    for seed in seeds:
                        cells.append(Cell(dataset, spec.name, mode, labels, seed))
    return cells


def main(args: argparse.Namespace) -> int:
    cells = expand_grid(args)
    overrides = parse_overrides(args.overrides)
    configs = [cell_config(c, args.profile, overrides, args.data_root, args.nbi) for c in cells]
    if args.dry_run:
        for cell in cells:
            print(f"{'done' if (cell.folder(args.out) / 'result.json').exists() else 'todo'}  {cell}")
        return 0
    for cell, cfg in zip(cells, configs):
        rec = run_cell(cell, cfg, args.out, args.device)
        print(f"{cell}: test_top1 {rec['test_top1']:.2f}  ({rec['wall_s']:.1f} s)")
    rebuild_results_csv(args.out)
    return 0
