"""`run`: expand the grid and run every cell that has no finished record (here, in local worker processes, or
as Slurm jobs: `benchmark.harness.executors`), then report."""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from benchmark.harness.cell import Outcome, cell_status, is_done
from benchmark.harness.config import parse_overrides, with_device
from benchmark.harness.costs import estimate, write_costs
from benchmark.harness.disk import grid_disk
from benchmark.harness.estimate import dry_run_estimate
from benchmark.harness.executors import EXECUTORS, follow_jobs, run_pool, submit_to_slurm, slurm_settings
from benchmark.harness.grid import Cell, check_cells, configured, expand_grid
from benchmark.harness.perf_record import process_age_s
from benchmark.harness.runner import run_grid
from benchmark.kit import distributed
from benchmark.kit.config_files import DEFAULT_PROFILE, PROFILES
from benchmark.kit.data import DATASETS
from benchmark.kit.errors import ConfigError
from benchmark.kit.files import holder_is_gone, lock_holder
from benchmark.kit.models import create_backbone
from benchmark.kit.records import rebuild_results_csv
from benchmark.kit.runtime import DEVICES, available_cores, resolve_device
from benchmark.reports.publish import write_reports


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default="all",
                        help="all (Table II), ablations, controls (the grid's power), or comma-separated names (see `list`)")
    parser.add_argument("--labels", default="5,10,30,50", help="labeled percentages, e.g. 5,10,30,50")
    parser.add_argument("--dataset", default="synthetic", help=f"comma-separated: {', '.join(DATASETS)}")
    parser.add_argument("--data-root", default=None, help="folder of a real dataset")
    parser.add_argument("--nbi", default=None, help="NBI source for kvasir: spectral | generator:PATH | paired")
    parser.add_argument("--modes", default=None, help="single,multi,fused (default: each method's own modes)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help=f"one of {', '.join(PROFILES)}")
    parser.add_argument("--device", default=None,
                        help=f"one of {', '.join(DEVICES)}: the same as --set runtime.device=... (default: the profile's)")
    parser.add_argument("--out", default="results", type=Path, help="output folder")
    parser.add_argument("--reports", default="reports", type=Path, help="folder of the tables and figures")
    parser.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                        help="config override, repeatable; applies to the cells whose config has KEY")
    parser.add_argument("--dry-run", action="store_true",
                        help="check what a run checks, then print the cells, what is already done, time and disk")
    parser.add_argument("--executor", default="local", choices=EXECUTORS,
                        help="local: on this machine (default); slurm: one Slurm job per cell, through submitit, "
                             "with the profile's `executor` section (see docs/scale-out.md)")
    parser.add_argument("--workers", default="auto",
                        help="--executor local: cells at once, each in its own process; auto (default): one per "
                             "core at runtime.threads each, on CUDA --cells-per-gpu per GPU; 1: in this process")
    parser.add_argument("--cells-per-gpu", default=2, type=int,
                        help="--workers auto on CUDA: cells that share one GPU (default 2)")
    parser.add_argument("--wait", action="store_true",
                        help="--executor slurm: follow the jobs to their end (default: submit, print the job ids, return)")


def _workers(args: argparse.Namespace, cells: list[Cell]) -> int:
    """Cells at once: `--workers N`, or for `auto` as many as the machine holds at `runtime.threads` each
    (one per core at the default of 1; on CUDA `--cells-per-gpu` per GPU). Under torchrun, Slurm or with
    every core per cell (threads 0): one, in this process."""
    if args.workers != "auto":
        try:
            workers = int(args.workers)
        except ValueError:
            workers = 0
        if workers < 1:
            raise ConfigError(f"bad --workers {args.workers}; expected auto or a number from 1")
        return workers
    if args.cells_per_gpu < 1:
        raise ConfigError(f"bad --cells-per-gpu {args.cells_per_gpu}; expected 1 or more")
    if args.executor != "local" or distributed.world_size() > 1:
        return 1
    if _device(cells).type == "cuda":
        return torch.cuda.device_count() * args.cells_per_gpu
    threads = max(cell.cfg.runtime.threads for cell in cells)
    return max(1, available_cores() // threads) if threads else 1


def _device(cells: list[Cell]) -> torch.device:
    return resolve_device(cells[0].cfg.runtime.device)


def _estimate(cells: list[Cell], args: argparse.Namespace, workers: int):
    """The grid's estimate on this machine from measured cell costs (`benchmark.harness.costs`), or None."""
    if args.executor != "local" or not cells:
        return None
    return estimate(cells, args.reports, workers, _device(cells))


def _estimate_line(found, cells: list[Cell], reports: Path, device: torch.device) -> str:
    """The grid's estimated wall time on this machine (`found`, from cell costs), else from a `perf` measurement."""
    return found.line() if found is not None else dry_run_estimate(cells, reports, device)


def check_out(out: Path, needs_writing: bool) -> None:
    """`--out` is a folder (or can be one), and writable when cells are to run there: one line now
    rather than an error in the middle of the grid. A finished grid in a read-only folder is fine."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    if not needs_writing:
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as err:
        raise ConfigError(f"--out {out} is not writable: {err.strerror or err}") from None


def main(args: argparse.Namespace) -> int:
    overrides = with_device(parse_overrides(args.overrides), args.device)
    cells = expand_grid(args.method, args.labels, args.dataset, args.modes, args.seeds)
    cells = configured(cells, args.profile, overrides, args.data_root, args.nbi)
    _device(cells)  # a bad or missing device is an error before anything runs
    slurm = slurm_settings(cells)
    distributed.init()
    workers = _workers(args, cells)
    if workers > 1 and args.executor != "local":
        raise ConfigError("--workers is for --executor local; on Slurm, executor.array_parallelism limits the jobs at once")
    if distributed.world_size() > 1 and (workers > 1 or args.executor != "local"):
        raise ConfigError("under torchrun every process runs every cell with the others; "
                          "--workers and --executor slurm start processes of their own")
    check_out(args.out, needs_writing=False)
    for model_cfg in {json.dumps(c.cfg.model.model_dump(), sort_keys=True): c.cfg.model for c in cells}.values():
        create_backbone(model_cfg, num_classes=2)  # starting weights missing or unfit: one line, before any cell
    pending = [c for c in cells if not is_done(c, args.out)]
    check_cells(pending)  # a dry run checks what a run checks
    if args.dry_run:
        return _dry_run(cells, args, workers) if distributed.is_main() else 0
    check_out(args.out, needs_writing=bool(pending))
    found = _estimate(pending, args, workers) if distributed.is_main() else None
    seconds = dict(zip(pending, found.durations)) if found is not None else None
    if distributed.is_main():
        print(_estimate_line(found, pending, args.reports, _device(cells)))

    start = time.perf_counter()
    if args.executor == "slurm":
        outcomes, jobs = submit_to_slurm(cells, args.out, slurm)
        if not args.wait:
            print("Each job adds its record to results.csv as it ends; `--dry-run` shows every cell's state. "
                  "Once the jobs have ended, the same command submits again only the cells still missing.")
            return 0
        outcomes += follow_jobs(jobs)
    elif workers > 1 and len(pending) > 1:
        outcomes = run_pool(cells, args.out, min(workers, len(pending)), seconds)
    else:
        outcomes = run_grid(cells, args.out, seconds)
        if not distributed.is_main():
            return 0  # under torchrun rank 0 sums up and reports for all processes
    if args.executor == "local" and distributed.world_size() == 1:
        outcomes = _take_over(outcomes, cells, args.out)
    counts = Counter(o.status for o in outcomes)
    abandoned = [o for o in outcomes if o.status == "busy" and (holder := lock_holder(o.cell.lock(args.out)))
                 and holder_is_gone(holder)]  # looked at now: the holder a cell was left to may have ended since
    print(f"grid: {counts['finished']} finished, {counts['done']} already done, {counts['failed']} failed, "
          f"{counts['busy']} left to another process ({time.perf_counter() - start:.1f} s)")
    for o in outcomes:
        if o.status == "failed":
            print(f"  failed: {o.cell}: {o.message} (log: {o.log})")
        elif o.status == "busy":
            gone = ", which has ended: its lock is held by a process it left behind" if o in abandoned else ""
            print(f"  running elsewhere: {o.cell}: {o.message}{gone}")

    results = rebuild_results_csv(args.out)
    if not results.empty:
        written = write_reports(results, args.out, args.reports)
        markdown = args.reports / "table2.md"
        if markdown in written:
            print("\n" + markdown.read_text())
        print("wrote " + ", ".join(str(p) for p in written))
    ran = [o for o in outcomes if o.status == "finished" and o.record is not None]
    if ran and args.executor == "local":
        costs = write_costs([o.record for o in ran], [o.cell.cfg for o in ran], args.reports, process_age_s(),
                            min(workers, len(ran)), _device(cells))
        if costs is not None:
            print(f"cell costs of this machine: {costs} (the next estimate starts from them)")
    return 1 if counts["failed"] or abandoned else 0


def _take_over(outcomes: list[Outcome], cells: list[Cell], out: Path) -> list[Outcome]:
    """Cells that were left to another process which has ended since without finishing them (killed,
    say) run here now, so that a command never ends with a cell nobody runs; looked at again after each
    round, as another holder may end while this process runs the last ones."""
    while left := {o.cell for o in outcomes if o.status == "busy" and lock_holder(o.cell.lock(out)) is None
                   and not is_done(o.cell, out)}:
        print(f"{len(left)} cells were left to a process that has ended without finishing them: running them here")
        again = run_grid([c for c in cells if c in left], out)
        outcomes = [o for o in outcomes if o.cell not in left] + again
    return outcomes


def _dry_run(cells: list[Cell], args: argparse.Namespace, workers: int) -> int:
    statuses = [cell_status(c, args.out) for c in cells]
    for cell, (status, detail) in zip(cells, statuses):
        print(f"{status:<8} {cell}" + (f"  ({detail})" if detail else ""))
    counts = Counter(s for s, _ in statuses)
    print(f"{len(cells)} cells: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    todo = [i for i, (status, _) in enumerate(statuses) if status not in ("done", "running")]
    todo_cells = [cells[i] for i in todo]
    if todo:
        print("\n".join(grid_disk(todo_cells).lines(args.out)))
    found = _estimate(todo_cells, args, workers)
    print(_estimate_line(found, todo_cells, args.reports, _device(cells)))
    return 0
