"""Runs one grid cell, one record each, unless a record of its very config is there.

`run_cell` depends only on its cell (with its config) and the files under `out`, so a local pool or a Slurm job
can call it in another process. Each call claims its cell with a lock beside the cell's folder
(`<seed folder>.lock`) before touching it: any number of processes can work on one output folder,
and a cell another process holds is left to it.

Under torchrun (`benchmark.kit.distributed`) the N processes of one command are one run: each calls
`run_grid` and `run_cell` for the same cells in the same order; rank 0 alone claims a cell, decides
whether it runs (and tells the others), and writes every file of it; the others train along."""
from __future__ import annotations

import logging
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from benchmark.harness.config import config_hash
from benchmark.harness.evaluate import train_and_evaluate
from benchmark.harness.grid import CHECKPOINTS, HASH, LOG, MODEL, OUTPUTS, Cell
from benchmark.kit import distributed
from benchmark.kit.errors import BenchmarkError, storage_error
from benchmark.kit.files import atomic_write, file_lock, lock_holder, warn_once, zip_problem
from benchmark.kit.records import FAILED, RECORD, read_failure, read_record, write_json_atomic

_log = logging.getLogger(__name__)

@dataclass
class Outcome:
    """What became of one cell; plain data, so it can come back from another process."""

    cell: Cell
    status: str  # "finished", "done" (a matching record was already there), "failed", "busy"
    record: dict | None = None
    message: str = ""  # failed: the error; busy: who holds the cell
    log: Path | None = None


def finished_record(cell: Cell, out: Path) -> dict | None:
    """The cell's record if it was computed with this very config and the files saved with it are
    whole; a damaged record or output file is reported in one line, and the cell runs again."""
    folder, cfg = cell.folder(out), cell.cfg
    record = read_record(folder)
    if record is None or record.get("config_hash") != config_hash(cfg):
        return None
    for name, full in OUTPUTS.items():
        if name == MODEL and not cfg.runtime.save_model:
            continue
        problem = zip_problem(folder / name, full)
        if problem is not None:
            warn_once(folder / name, problem, "its cell runs again")
            return None
    return record


def is_done(cell: Cell, out: Path) -> bool:
    """A whole record computed with this very config exists."""
    return finished_record(cell, out) is not None


def cell_status(cell: Cell, out: Path) -> tuple[str, str]:
    """(status, detail) of a cell as `run` would find it: done, running, failed, rerun, resume or todo."""
    folder, chash = cell.folder(out), config_hash(cell.cfg)
    record = finished_record(cell, out)
    if record is not None:
        return "done", f"test_top1 {record['test_top1']:.2f}"
    holder = lock_holder(cell.lock(out))
    if holder is not None:
        return "running", holder
    if _folder_hash(folder) not in (None, chash):
        return "rerun", "config changed: starts over"
    failure = read_failure(folder)
    if failure is not None:
        return "failed", f"{failure['message']} (will be retried)"
    checkpoints = sorted(p.name for p in folder.glob(CHECKPOINTS))
    if checkpoints:
        return "resume", "from " + ", ".join(checkpoints)
    return "todo", ""


def run_cell(cell: Cell, out: Path, show_progress: bool = False) -> Outcome:
    """Train and evaluate one cell unless a record of the same config exists.

    A killed run leaves its checkpoints and no record; the next call resumes from them. A run that
    raises (a NaN loss, a bug in a method) leaves `failed.json` and its traceback in `run.log`, and
    is retried by the next call. User errors (`BenchmarkError`) propagate: they concern every cell.

    Under torchrun a run that raises also propagates (after `failed.json`), ending the command: the
    processes can go on together only if each knows the others failed alike, which e.g. an
    out-of-memory error on one GPU does not tell them."""
    distributed.init()
    out = Path(out)
    folder = cell.folder(out)
    if not distributed.is_main():
        return _follow(cell, out)
    if is_done(cell, out):
        return _lead(Outcome(cell, "done", read_record(folder)))
    with file_lock(cell.lock(out), wait=False) as claimed:
        if not claimed:
            return _lead(Outcome(cell, "busy", message=lock_holder(cell.lock(out)) or "another process"))
        if is_done(cell, out):  # finished by another process between our check and our claim
            return _lead(Outcome(cell, "done", read_record(folder)))
        reason = _prepare_folder(folder, config_hash(cell.cfg))
        distributed.broadcast_object("run")
        with _RunLog(folder / LOG):
            if reason:
                _log.info(reason)
            try:
                record = train_and_evaluate(cell, out, show_progress)
            except BenchmarkError:
                raise
            except KeyboardInterrupt:
                _log.warning("interrupted; the next run resumes from the last checkpoint")
                raise
            except OSError as err:
                if storage_error(err) is not None:  # a full disk or a read-only folder stops the grid
                    raise storage_error(err) from None
                return _failed(cell, folder, err)
            except Exception as err:  # noqa: BLE001 - one broken cell must not stop the grid
                return _failed(cell, folder, err)
    return Outcome(cell, "finished", record, log=folder / LOG)


def _failed(cell: Cell, folder: Path, err: Exception) -> Outcome:
    """Mark a cell whose run raised as failed (`failed.json`, the traceback in `run.log`); the next
    `run` retries it. Under torchrun the error propagates (see `run_cell`)."""
    message = _one_line(err)
    _log.error("FAILED: %s\n%s", message, traceback.format_exc())
    write_json_atomic(folder / FAILED, {"message": message, "config_hash": config_hash(cell.cfg),
                                        "time": time.strftime("%Y-%m-%d %H:%M:%S")})
    if distributed.world_size() > 1:
        raise err
    return Outcome(cell, "failed", message=message, log=folder / LOG)


def _lead(outcome: Outcome) -> Outcome:
    """Rank 0 tells the other processes that this cell does not run (a no-op in one process)."""
    distributed.broadcast_object(outcome.status)
    return outcome


def _follow(cell: Cell, out: Path) -> Outcome:
    """Ranks 1..N-1: do what rank 0 decided for the cell; when it runs, train along (rank 0 alone
    evaluates on test and writes the files)."""
    status = distributed.broadcast_object(None)
    if status != "run":
        return Outcome(cell, status)
    train_and_evaluate(cell, out, show_progress=False)
    return Outcome(cell, "finished")


def _one_line(err: Exception) -> str:
    """`Type: first line of the message`, for summaries; the log has the whole traceback."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _folder_hash(folder: Path) -> str | None:
    marker = folder / HASH
    return marker.read_text().strip() if marker.exists() else None


def _prepare_folder(folder: Path, chash: str) -> str:
    """Make `folder` ready for a run of config `chash`; returns what was done, for the log.

    Files of another config (or of unknown origin) go, so a changed config starts over. Without a
    checkpoint the run starts from scratch, so the curves of an earlier attempt go too; with one,
    the training loop resumes and rewinds the curves itself. A previous failure marker and temporary
    files of a killed write go in any case."""
    old = _folder_hash(folder)
    reason = ""
    if folder.exists() and old != chash and any(folder.iterdir()):
        shutil.rmtree(folder)
        reason = f"files of config {old or 'unknown'} found: starting over with config {chash}"
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / HASH) as tmp:
        tmp.write_text(chash)
    checkpoints = sorted(p.name for p in folder.glob(CHECKPOINTS))
    if checkpoints:
        reason = reason or f"resuming from {', '.join(checkpoints)}"
    else:
        (folder / "curves.jsonl").unlink(missing_ok=True)
        shutil.rmtree(folder / "tensorboard", ignore_errors=True)
    # A failure marker, temporary files of a killed write, and a record that did not pass
    # `finished_record` (damaged, or with damaged outputs) go in any case.
    for stale in [folder / FAILED, folder / RECORD, *folder.glob("*.tmp")]:  # pathlib's * matches dot files too
        stale.unlink(missing_ok=True)
    return reason


class _RunLog:
    """For the `with` block, INFO and up from the suite and its methods (and WARNING and up that any
    library logs) also go to the run's own log file, appended across attempts."""

    LOGGERS = ("benchmark", "methods")

    def __init__(self, path: Path):
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.levels: dict[str, int] = {}

    def __enter__(self) -> "_RunLog":
        logging.getLogger().addHandler(self.handler)
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            self.levels[name] = logger.level
            logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc) -> None:
        for name, level in self.levels.items():
            logging.getLogger(name).setLevel(level)
        logging.getLogger().removeHandler(self.handler)
        self.handler.close()
