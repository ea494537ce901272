"""Where the cells of a grid run: in this process, in a pool of local workers, or as Slurm jobs.

- `run --executor local` (the default): `runner.run_grid`, one cell after the other in this process.
- `run --executor local --workers N`: `run_pool`, N worker processes on this machine, each on its own
  GPU (round robin when there are fewer GPUs than workers) or with its share of the CPU cores.
- `run --executor slurm`: `submit_to_slurm`, one Slurm job per cell (grouped into job arrays) through
  submitit; `--wait` follows them with `follow_jobs`.

Every executor runs a cell the same way, `CellTask`, which calls `cell.run_cell`: all of them write
the same records into the same output folder, and the runner's per-cell claims keep any number of
them apart. A cell with a record is never run again, so re-running a command runs (or submits) only
what is missing.

MICS pre-trains once per (dataset, seed, profile) and caches the result, under its own lock, for its
other label ratios. So that those cells do not all start together and wait on that lock (holding a
GPU each), the first pending MICS cell of each (dataset, seed) leads: the others start only after it
has ended, however it ended (locally they are not handed out before; on Slurm, `afterany` job
dependencies). If the leader failed, the first follower to run computes the pre-training itself.
"""
from __future__ import annotations

import concurrent.futures as cf
import importlib
import multiprocessing
import os
import signal
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import submitit
import torch
from submitit.core.utils import FailedJobError
from tqdm import tqdm

import methods
from benchmark.harness.cell import Outcome, is_done, run_cell
from benchmark.harness.grid import LOG, Cell
from benchmark.harness.runner import GridBar, summary_line
from benchmark.kit.errors import ConfigError
from benchmark.kit.files import lock_holder
from benchmark.kit.lifetime import follow_parent
from benchmark.kit.records import rebuild_results_csv
from benchmark.kit.runtime import available_cores, share_cores
from benchmark.kit.schema import ExecutorConfig

EXECUTORS = ("local", "slurm")
JOB_NAME = "mics-bench"
POLL_S = 5.0  # how often `--wait` looks at the jobs


@dataclass(frozen=True)
class CellTask(submitit.helpers.Checkpointable):
    """One cell, to run in another process (a pool worker or a Slurm job); plain data, so it pickles.

    `registrar` is the module whose import registers the cell's method: a method registered outside
    the `methods` package (by a script, or a test) exists in the worker too.

    Checkpointable: when Slurm preempts the job or its time limit comes near, submitit requeues it
    (up to 3 times for time limits), and the requeued job resumes from the run's last checkpoint."""

    cell: Cell
    out: Path
    registrar: str

    def __call__(self) -> Outcome:
        importlib.import_module(self.registrar)
        outcome = run_cell(self.cell, self.out)
        if outcome.status == "finished":
            rebuild_results_csv(self.out)  # so the table is current even when nobody follows the jobs
        return outcome


def slurm_settings(cells: list[Cell]) -> ExecutorConfig:
    """The cells' `executor` section: from the profile and the `--set executor.KEY=VALUE` overrides, the same
    for every cell of a command. Where a cell runs is not what it computes: the section stays out of the config
    hash and the record (`RunConfig.plain`), so changing a partition or a time limit re-runs nothing."""
    return cells[0].cfg.executor


def cell_tasks(todo: list[Cell], out: Path) -> list[CellTask]:
    """The tasks of `todo`; `out` made absolute, as a Slurm job may start in another folder."""
    out = Path(out).resolve()
    return [CellTask(cell, out, methods.get_method(cell.method).train.__module__) for cell in todo]


def pretraining_leaders(tasks: list[CellTask]) -> dict[Cell, Cell]:
    """follower -> leader: each cell with a stage that cells share through a cache (its method's
    `Cost`, e.g. MICS's pre-training) waits for the first cell (in grid order) with the same stage key."""
    first: dict[tuple[str, str], Cell] = {}
    leaders: dict[Cell, Cell] = {}
    for task in tasks:
        for stage in methods.get_method(task.cell.method).cost.stages:
            if stage.shared_key is None:
                continue
            key = (stage.loop, stage.shared_key(task.cell.cfg))
            if key in first:
                leaders.setdefault(task.cell, first[key])
            else:
                first[key] = task.cell
    return leaders


# --------------------------------------------------------------------------- local worker processes


def run_pool(cells: list[Cell], out: Path, workers: int,
             seconds: dict[Cell, float] | None = None) -> list[Outcome]:
    """Run the cells in `workers` processes at once, with a progress bar and one summary line per cell
    as in `runner.run_grid`; every finished cell rebuilds `results.csv` (in its worker).

    Cells are handed out in grid order as workers become free, except that a cell waits for its
    pre-training leader to end. An error in what the user asked for (`BenchmarkError`) stops the grid
    as in a sequential run, once the cells already running have ended."""
    done = {cell for cell in cells if is_done(cell, out)}
    outcomes = [Outcome(cell, "done") for cell in cells if cell in done]
    waiting = cell_tasks([cell for cell in cells if cell not in done], out)
    print(f"{len(cells)} cells: {len(outcomes)} already done, {len(waiting)} to run in {workers} workers")
    leaders = pretraining_leaders(waiting)
    total = len(waiting)
    ended: set[Cell] = set()
    slots = [_Worker(i, workers, cells[0].cfg.runtime.device) for i in range(workers)]
    running: dict[cf.Future, tuple[CellTask, _Worker]] = {}
    try:
        with GridBar([t.cell for t in waiting], seconds) as bar:
            while waiting or running:
                busy = [slot for _, slot in running.values()]
                free = [slot for slot in slots if slot not in busy]
                ready = [t for t in waiting if t.cell not in leaders or leaders[t.cell] in ended]
                for slot, task in zip(free, ready):
                    waiting = [t for t in waiting if t is not task]
                    running[slot.submit(task)] = (task, slot)
                finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    task, slot = running.pop(future)
                    outcome = slot.outcome(future, task)
                    ended.add(task.cell)
                    outcomes.append(outcome)
                    tqdm.write(f"[{len(ended)}/{total}] {task.cell}: {summary_line(outcome)}")
                    bar.advance(task.cell)
    finally:
        for slot in slots:
            slot.close()
    return outcomes


class _Worker:
    """One worker process of `run_pool`, slot `index` of `count`.

    A process pool of one process: when the process dies (killed, out of memory, a crash in native
    code), only the cell it was running is lost. That cell is reported failed, and the next cell of
    this slot gets a fresh process."""

    def __init__(self, index: int, count: int, device: str):
        gpus = torch.cuda.device_count() if device != "cpu" else 0
        self.initargs = (index % gpus if gpus else None, count)
        self.pool = self._start()

    def _start(self) -> cf.ProcessPoolExecutor:
        # spawn, not fork: a forked child would inherit this process's threads and CUDA state.
        return cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_start_worker, initargs=(os.getpid(), *self.initargs))

    def submit(self, task: CellTask) -> cf.Future:
        return self.pool.submit(_interruptible, task)

    def outcome(self, future: cf.Future, task: CellTask) -> Outcome:
        try:
            return future.result()
        except BrokenProcessPool:
            self.pool.shutdown(wait=False)
            self.pool = self._start()
            return Outcome(task.cell, "failed", log=task.cell.folder(task.out) / LOG,
                           message="the worker process died (killed, out of memory, or a crash in native code)")

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _interruptible(task: CellTask) -> Outcome:
    """A cell in a worker process: Ctrl-C interrupts it (the next run resumes it from its checkpoint),
    while an idle worker ignores Ctrl-C (`follow_parent`) and so prints no traceback."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return task()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start_worker(parent: int, gpu: int | None, slots: int) -> None:
    """First thing in each worker process: it ends with its parent (`follow_parent`), takes its share
    of the CPU cores (one of `slots` cells at once), and its own GPU.

    `set_device` rather than CUDA_VISIBLE_DEVICES: the latter is read once, when CUDA initialises, which
    an import may already have done; "cuda" then means this GPU for everything the run does. A profile
    that sets `runtime.threads` overrides the thread count for its runs."""
    follow_parent(parent)
    share_cores(slots)
    torch.set_num_threads(max(1, available_cores() // slots))
    if gpu is not None:
        torch.cuda.set_device(gpu)


# --------------------------------------------------------------------------------------- Slurm


def slurm_executor(settings: ExecutorConfig, folder: Path, dependency: str | None = None) -> submitit.AutoExecutor:
    """A submitit executor for the grid's jobs, their files (scripts, pickles, logs) in `folder/<job id>/`.

    A new executor per dependency: submitit lets a parameter be changed but never unset."""
    try:
        executor = submitit.AutoExecutor(folder=Path(folder) / "%j", cluster=settings.cluster)
    except RuntimeError as err:  # no `srun` on this machine
        raise ConfigError(f"--executor slurm: {err} (to try the path here: --set executor.cluster=local)") from None
    sbatch = dict(settings.sbatch)
    if dependency is not None:
        sbatch["dependency"] = dependency
    executor.update_parameters(
        name=JOB_NAME, timeout_min=settings.time_min, cpus_per_task=settings.cpus_per_job,
        mem_gb=settings.mem_gb,
        gpus_per_node=settings.gpus_per_job or None,  # None: no GPU line at all, rather than 0 GPUs
        slurm_partition=settings.partition, slurm_array_parallelism=settings.array_parallelism,
        slurm_additional_parameters=sbatch,
    )
    return executor


def submit_to_slurm(cells: list[Cell], out: Path,
                    settings: ExecutorConfig) -> tuple[list[Outcome], list[tuple[Cell, submitit.Job]]]:
    """Submit one job per cell that has no record and that no process holds now; print the job ids.

    -> (outcomes of the cells left alone, (cell, job) of each submitted one). Cells without a leader,
    the leaders first, go in one job array; each leader's followers in another, which depends on it."""
    outcomes, todo = [], []
    for cell in cells:
        if is_done(cell, out):
            outcomes.append(Outcome(cell, "done"))
        elif (holder := lock_holder(cell.lock(out))) is not None:
            outcomes.append(Outcome(cell, "busy", message=holder))
        else:
            todo.append(cell)
    tasks = cell_tasks(todo, out)
    leaders = pretraining_leaders(tasks)
    leading = set(leaders.values())
    heads = [t for t in tasks if t.cell in leading]
    alone = [t for t in tasks if t.cell not in leading and t.cell not in leaders]
    folder = Path(out).resolve() / "slurm"
    jobs = _submit_array(heads + alone, settings, folder)
    job_of = {cell: job for cell, job in jobs}
    for head in heads:
        followers = [t for t in tasks if leaders.get(t.cell) == head.cell]
        jobs += _submit_array(followers, settings, folder, f"afterany:{job_of[head.cell].job_id}")

    print(f"{len(cells)} cells: {sum(o.status == 'done' for o in outcomes)} already done, "
          f"{sum(o.status == 'busy' for o in outcomes)} running elsewhere, {len(jobs)} submitted "
          f"({settings.cluster}; job files in {folder})")
    for cell, job in jobs:
        after = f"  (after {job_of[leaders[cell]].job_id})" if cell in leaders else ""
        print(f"  {job.job_id:<12} {cell}{after}")
    return outcomes, jobs


def _submit_array(tasks: list[CellTask], settings: ExecutorConfig, folder: Path,
                  dependency: str | None = None) -> list[tuple[Cell, submitit.Job]]:
    """One job array (a plain job for a single task) of `tasks`."""
    if not tasks:
        return []
    executor = slurm_executor(settings, folder, dependency)
    with executor.batch():
        jobs = [executor.submit(task) for task in tasks]
    return [(task.cell, job) for task, job in zip(tasks, jobs)]


def follow_jobs(jobs: list[tuple[Cell, submitit.Job]]) -> list[Outcome]:
    """`--wait`: a progress bar over the jobs and one summary line per cell as its job ends.

    A job that ends without a result (killed at its time limit, out of memory, cancelled, node
    failure) or that raised outside `run_cell` is a failed cell, reported with the job's error log.
    A run that failed inside `run_cell` (an exception, a NaN loss, a time limit reached after the
    last requeue) comes back as its own failed outcome, with its `run.log`."""
    cell_of = {job.job_id: cell for cell, job in jobs}
    outcomes = []
    with tqdm(total=len(jobs), desc="jobs", unit="job", disable=None) as bar:
        finished = submitit.helpers.as_completed([job for _, job in jobs], poll_frequency=POLL_S)
        for i, job in enumerate(finished, 1):
            outcome = _job_outcome(cell_of[job.job_id], job)
            outcomes.append(outcome)
            tqdm.write(f"[{i}/{len(jobs)}] {outcome.cell}: {summary_line(outcome)}")
            bar.update()
    return outcomes


def _job_outcome(cell: Cell, job: submitit.Job) -> Outcome:
    error = job.exception()
    if error is None:
        return job.result()
    what = "raised an error" if isinstance(error, FailedJobError) else f"ended without a result ({job.state})"
    return Outcome(cell, "failed", message=f"job {job.job_id} {what}", log=job.paths.stderr)
