"""Runs grid cells: one (dataset, method, mode, label ratio, seed) each, one record each.

A cell's folder holds, while it runs and after: `config_hash` (what the files there were computed
with), `run.log`, `curves.jsonl`, `tensorboard/`, the training loop's `*_checkpoint.pt`, and at the
end `test_outputs.npz` (what the reports and figures read), `model.pt` when `runtime.save_model` asks
for it, and last of all `result.json`; or `failed.json` when the run stopped with an error.

`run_cell` depends only on its arguments and the files under `out`, so a local pool or a Slurm job
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

import numpy as np
import torch
from tqdm import tqdm

import methods
from benchmark.harness.config import build_config, config_hash, set_dotted, validate_config
from benchmark.kit import budget, distributed
from benchmark.kit.contract import MODES, RunContext, Trained
from benchmark.kit.curves import CurveWriter
from benchmark.kit.data import DATASETS, check_ratio, labeled_subset, load_dataset, load_split_indices, make_split
from benchmark.kit.data.loaders import eval_batches, normalised_with
from benchmark.kit.errors import BenchmarkError, ConfigError, storage_error, unknown_name
from benchmark.kit.files import atomic_write, file_lock, lock_holder, warn_once, zip_problem
from benchmark.kit.health import PseudoLabelMonitor, collapsed
from benchmark.kit.models import input_normalisation
from benchmark.kit.records import (
    FAILED,
    RECORD,
    bootstrap_ci95,
    read_failure,
    read_record,
    rebuild_results_csv,
    run_dir,
    write_json_atomic,
)
from benchmark.kit.runtime import (
    code_version,
    configure_threads,
    peak_rss_mb,
    resolve_amp,
    resolve_amp_dtype,
    resolve_device,
    seed_everything,
)
from benchmark.kit.training import atomic_save, predict_logits

_log = logging.getLogger(__name__)
LOG = "run.log"
HASH = "config_hash"
CHECKPOINTS = "*_checkpoint.pt"
# The files saved with a record -> whether reading them must check every byte (small files), or only
# that they are whole zip files (the model, which may weigh hundreds of MB).
OUTPUTS = {"test_outputs.npz": True, "model.pt": False}
MODEL = "model.pt"  # written only with runtime.save_model
# `run --method` words -> the registry group they run: Table II, the ablations, the grid's controls.
GROUPS = {"all": "table2", "ablations": "ablation", "controls": "control"}


@dataclass(frozen=True)
class Cell:
    dataset: str
    method: str
    mode: str
    labels: float
    seed: int

    def folder(self, out: Path) -> Path:
        return run_dir(out, self.dataset, self.method, self.mode, self.labels, self.seed)

    def lock(self, out: Path) -> Path:
        """Beside the folder, not in it: a run that starts over may delete its folder, never its lock."""
        folder = self.folder(out)
        return folder.with_name(folder.name + ".lock")

    def __str__(self) -> str:
        return f"{self.dataset}/{self.method}/{self.mode}/labels{self.labels:g}/seed{self.seed}"


@dataclass
class Outcome:
    """What became of one cell; plain data, so it can come back from another process."""

    cell: Cell
    status: str  # "finished", "done" (a matching record was already there), "failed", "busy"
    record: dict | None = None
    message: str = ""  # failed: the error; busy: who holds the cell
    log: Path | None = None


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _numbers(text: str, kind: str, cast) -> list:
    try:
        values = [cast(t) for t in _csv(text)]
    except ValueError:
        raise ConfigError(f"bad {kind} '{text}'; expected comma-separated numbers") from None
    if not values:
        raise ConfigError(f"no {kind} given")
    return values


def _folder_ratio(percent: float) -> float:
    """A ratio its folder name (`labels<NN>`, 6 significant digits) keeps exactly, so that two ratios
    never share one folder."""
    if float(f"{percent:g}") != percent:
        raise ConfigError(f"label ratio {percent!r} has more digits than its folder name labels{percent:g} "
                          "keeps; give at most 6 significant digits")
    return percent


def expand_grid(method: str, labels: str, dataset: str, modes: str | None = None, seeds: str = "0") -> list[Cell]:
    """Methods x modes x label ratios x seeds x datasets, in that nesting order (datasets outermost).

    `method` all | ablations | controls (a group of the registry, `GROUPS`) | comma-separated names.
    Each method runs in the modes it supports (baselines single and multi, MICS fused); a method
    with fixed labels (the fully supervised bound) runs once per dataset and seed. Arguments as `run` takes
    them, comma-separated."""
    if method in GROUPS:
        names = [s.name for s in methods.list_methods(GROUPS[method])]
    else:
        names = list(dict.fromkeys(_csv(method)))
    specs = [methods.get_method(n) for n in names]
    if not specs:
        raise ConfigError("no method to run; see `python -m benchmark list`")
    datasets = list(dict.fromkeys(_csv(dataset)))
    for d in datasets:
        if d not in DATASETS:
            raise unknown_name("dataset", d, DATASETS)
    if not datasets:
        raise ConfigError("no dataset given")
    ratios = [_folder_ratio(check_ratio(r)) for r in dict.fromkeys(_numbers(labels, "label ratios", float))]
    seed_list = list(dict.fromkeys(_numbers(seeds, "seeds", int)))
    for seed in seed_list:
        if not 0 <= seed < 2**32:
            raise ConfigError(f"bad seed {seed}; expected an integer from 0 to {2**32 - 1}")
    wanted = set(_csv(modes)) if modes else None
    for m in sorted((wanted or set()) - set(MODES)):
        raise unknown_name("mode", m, MODES)
    cells = []
    for data_name in datasets:
        for spec in specs:
            cell_modes = [m for m in spec.modes if wanted is None or m in wanted]
            cell_ratios = [spec.fixed_labels] if spec.fixed_labels is not None else ratios
            for mode in cell_modes:
                for ratio in cell_ratios:
                    for seed in seed_list:
                        cells.append(Cell(data_name, spec.name, mode, ratio, seed))
    if not cells:
        supported = "; ".join(f"{s.name}: {','.join(s.modes)}" for s in specs)
        raise ConfigError(f"no cell: none of the methods runs in modes {modes} ({supported})")
    return cells


def cell_configs(cells: list[Cell], profile: str, overrides: dict | None, data_root: str | None,
                 nbi: str | None) -> list[dict]:
    """The effective config of every cell.

    An override applies to each cell whose config has its key, so `--set method.T=0.9` reaches the
    methods that have a `T` and leaves the others alone; a key that no cell has is an error (a typo
    must not be silently ignored), and so is a value the schema refuses."""
    configs = [build_config(profile, c.method, c.mode, c.dataset, c.labels, c.seed, None, data_root, nbi)
               for c in cells]
    for key, value in (overrides or {}).items():
        error: ConfigError | None = None
        applied = False
        for cfg in configs:
            try:
                set_dotted(cfg, key, value)
                applied = True
            except ConfigError as err:
                error = err
        if not applied and error is not None:
            raise error
    return [validate_config(cfg, "--set") for cfg in configs] if overrides else configs


def check_cells(cells: list[Cell], configs: list[dict]) -> None:
    """What would stop a cell for reasons of the whole grid, checked before the first one runs (a
    `BenchmarkError` naming the cause): every dataset loads (its cache is built now if missing), and
    every (dataset, seed, ratio) gives each class a labeled, a validation and a test image, and
    unlabeled images to the methods that train on them. Only indices are computed: it takes seconds."""
    seen: set[tuple] = set()
    for cell, cfg in zip(cells, configs):
        spec = methods.get_method(cell.method)
        key = (config_hash({"data": cfg["data"]}), cell.seed, cell.labels, spec.uses_unlabeled)
        if key in seen:
            continue
        seen.add(key)
        raw, cache = load_dataset(cfg["data"])
        parts = load_split_indices(raw, cache, cfg["data"], cell.seed)
        labeled = labeled_subset(raw, parts, cfg["data"], cell.labels, cell.seed)
        if spec.uses_unlabeled and len(labeled) == len(parts["train"]):
            raise ConfigError(f"{cell.method} trains on unlabeled images, and {cell.labels:g}% labels of "
                              f"{cell.dataset} (seed {cell.seed}) leave none; use fullysupervised for the "
                              "all-labels bound")


def finished_record(cell: Cell, cfg: dict, out: Path) -> dict | None:
    """The cell's record if it was computed with this very config and the files saved with it are
    whole; a damaged record or output file is reported in one line, and the cell runs again."""
    folder = cell.folder(out)
    record = read_record(folder)
    if record is None or record.get("config_hash") != config_hash(cfg):
        return None
    for name, full in OUTPUTS.items():
        if name == MODEL and not cfg["runtime"]["save_model"]:
            continue
        problem = zip_problem(folder / name, full)
        if problem is not None:
            warn_once(folder / name, problem, "its cell runs again")
            return None
    return record


def is_done(cell: Cell, cfg: dict, out: Path) -> bool:
    """A whole record computed with this very config exists."""
    return finished_record(cell, cfg, out) is not None


def cell_status(cell: Cell, cfg: dict, out: Path) -> tuple[str, str]:
    """(status, detail) of a cell as `run` would find it: done, running, failed, rerun, resume or todo."""
    folder, chash = cell.folder(out), config_hash(cfg)
    record = finished_record(cell, cfg, out)
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


def run_cell(cell: Cell, cfg: dict, out: Path, device: str = "auto", show_progress: bool = False) -> Outcome:
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
        return _follow(cell, cfg, out, device)
    if is_done(cell, cfg, out):
        return _lead(Outcome(cell, "done", read_record(folder)))
    with file_lock(cell.lock(out), wait=False) as claimed:
        if not claimed:
            return _lead(Outcome(cell, "busy", message=lock_holder(cell.lock(out)) or "another process"))
        if is_done(cell, cfg, out):  # finished by another process between our check and our claim
            return _lead(Outcome(cell, "done", read_record(folder)))
        reason = _prepare_folder(folder, config_hash(cfg))
        distributed.broadcast_object("run")
        with _RunLog(folder / LOG):
            if reason:
                _log.info(reason)
            try:
                record = _train_and_evaluate(cell, cfg, out, device, show_progress)
            except BenchmarkError:
                raise
            except KeyboardInterrupt:
                _log.warning("interrupted; the next run resumes from the last checkpoint")
                raise
            except OSError as err:
                if storage_error(err) is not None:  # a full disk or a read-only folder stops the grid
                    raise storage_error(err) from None
                return _failed(cell, cfg, folder, err)
            except Exception as err:  # noqa: BLE001 - one broken cell must not stop the grid
                return _failed(cell, cfg, folder, err)
    return Outcome(cell, "finished", record, log=folder / LOG)


def _failed(cell: Cell, cfg: dict, folder: Path, err: Exception) -> Outcome:
    """Mark a cell whose run raised as failed (`failed.json`, the traceback in `run.log`); the next
    `run` retries it. Under torchrun the error propagates (see `run_cell`)."""
    message = _one_line(err)
    _log.error("FAILED: %s\n%s", message, traceback.format_exc())
    write_json_atomic(folder / FAILED, {"message": message, "config_hash": config_hash(cfg),
                                        "time": time.strftime("%Y-%m-%d %H:%M:%S")})
    if distributed.world_size() > 1:
        raise err
    return Outcome(cell, "failed", message=message, log=folder / LOG)


def _lead(outcome: Outcome) -> Outcome:
    """Rank 0 tells the other processes that this cell does not run (a no-op in one process)."""
    distributed.broadcast_object(outcome.status)
    return outcome


def _follow(cell: Cell, cfg: dict, out: Path, device: str) -> Outcome:
    """Ranks 1..N-1: do what rank 0 decided for the cell; when it runs, train along (rank 0 alone
    evaluates on test and writes the files)."""
    status = distributed.broadcast_object(None)
    if status != "run":
        return Outcome(cell, status)
    _train_and_evaluate(cell, cfg, out, device, show_progress=False)
    return Outcome(cell, "finished")


class GridBar:
    """The grid's progress bar: a tick per ended cell, weighted by the cell's estimated seconds when the grid
    has an estimate (`benchmark.harness.costs`), so that its ETA is the estimate corrected by the cells measured so far."""

    def __init__(self, cells: list[Cell], seconds: dict[Cell, float] | None, enabled: bool = True):
        self.weights = {c: (seconds or {}).get(c, 1.0) if seconds else 1.0 for c in cells}
        self.cells, self.ended = len(cells), 0
        form = "{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}<{remaining}]" if seconds else None
        self.bar = tqdm(total=sum(self.weights.values()), desc="grid", unit="run", position=0, bar_format=form,
                        disable=None if enabled else True)
        self.bar.set_postfix_str(f"0/{self.cells} cells")

    def advance(self, cell: Cell) -> None:
        self.ended += 1
        self.bar.set_postfix_str(f"{self.ended}/{self.cells} cells", refresh=False)
        self.bar.update(self.weights[cell])

    def __enter__(self) -> "GridBar":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


def run_grid(cells: list[Cell], configs: list[dict], out: Path, device: str = "auto",
             seconds: dict[Cell, float] | None = None) -> list[Outcome]:
    """Run the cells in order with a progress bar (weighted by `seconds`, the cells' estimated cost, when
    given), one summary line per cell, and `results.csv` rebuilt after every finished cell (so a killed
    grid leaves an up-to-date table). Under torchrun rank 0 decides which cells are pending and alone
    prints and writes."""
    distributed.init()
    main = distributed.is_main()
    done = distributed.broadcast_object([is_done(c, cfg, out) for c, cfg in zip(cells, configs)])
    pending = [(c, cfg) for c, cfg, d in zip(cells, configs, done) if not d]
    if main:
        print(f"{len(cells)} cells: {len(cells) - len(pending)} already done, {len(pending)} to run")
    outcomes = [Outcome(c, "done") for c, d in zip(cells, done) if d]
    with GridBar([c for c, _ in pending], seconds, enabled=main) as bar:
        for i, (cell, cfg) in enumerate(pending, 1):
            outcome = run_cell(cell, cfg, out, device, show_progress=True)
            outcomes.append(outcome)
            if not main:
                continue
            if outcome.status == "finished":
                rebuild_results_csv(out)
            tqdm.write(f"[{i}/{len(pending)}] {cell}: {summary_line(outcome)}")
            bar.advance(cell)
    return outcomes


def summary_line(outcome: Outcome) -> str:
    """One line per cell: accuracy, interval and time, or why it did not run."""
    if outcome.status == "finished":
        rec = outcome.record
        lo, hi = rec["test_top1_ci95"]
        return f"test_top1 {rec['test_top1']:.2f} [{lo:.2f}, {hi:.2f}]  val {rec['val_top1_best']:.2f}  {rec['wall_s']:.1f} s"
    if outcome.status == "failed":
        return f"FAILED: {outcome.message} (log: {outcome.log})"
    if outcome.status == "busy":
        return f"skipped: being run by {outcome.message}"
    return "already done"


class RunProgress:
    """A progress bar for one run, fed through `RunContext.progress(loop, done, total)` by the
    training loop; it starts a new bar when the loop changes (e.g. pre-training, then fine-tuning).
    It also times each loop from its first report to its last (`stage_s`, what the grid's cost
    estimate learns a shared stage's cost from: a stage reused from a cache never reports)."""

    def __init__(self, label: str, enabled: bool):
        self.label, self.enabled = label, enabled
        self.loop: str | None = None
        self.bar: tqdm | None = None
        self.times: dict[str, list[float]] = {}  # loop -> [first report, last report]

    @property
    def stage_s(self) -> dict[str, float]:
        return {loop: round(last - first, 2) for loop, (first, last) in self.times.items()}

    def __call__(self, loop: str, done: int, total: int) -> None:
        now = time.perf_counter()
        self.times.setdefault(loop, [now, now])[1] = now
        if self.bar is None or loop != self.loop:
            self.close()
            self.loop = loop
            self.bar = tqdm(total=total, initial=done, desc=f"{self.label} {loop}", unit="it",
                            position=1, leave=False, disable=None if self.enabled else True)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


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


def _train_and_evaluate(cell: Cell, cfg: dict, out: Path, device: str, show_progress: bool) -> dict | None:
    """The run itself: train, evaluate the selected and the last model on test, write the record
    (rank 0's part; under torchrun the other processes only train, and get None)."""
    start = time.perf_counter()  # the record's wall_s: the whole cell, its test pass and outputs included
    spec = methods.get_method(cell.method)
    folder = cell.folder(out)
    chash = config_hash(cfg)
    dev = resolve_device(device if device != "auto" else cfg["runtime"]["device"])
    _log.info("run %s on %s, config %s, code %s", cell, dev, chash, code_version())
    configure_threads(cfg["runtime"]["threads"])
    seed_everything(cell.seed)
    raw, cache = load_dataset(cfg["data"])
    split = make_split(raw, cache, cfg["data"], cell.labels, cell.seed)
    cfg = budget.apply(cfg, spec.stage_iterations(cfg, split.sizes()))  # the method and the record get scaled constants
    cfg["model"].update(input_normalisation(cfg["model"]))  # recorded: what the inputs were normalised with
    health = PseudoLabelMonitor(raw.labels[split.unlabeled.index])  # withheld labels: diagnosis only
    main = distributed.is_main()  # under torchrun the others train along and write nothing
    curves = CurveWriter(folder, logger=_log) if main else None
    progress = RunProgress(str(cell), show_progress and main)
    # `cache_dir` is absolute and fixed per output folder: every cell (and process) of this output
    # folder shares it, e.g. one MICS pre-training per (dataset, seed, profile).
    ctx = RunContext(device=dev, seed=cell.seed, run_dir=folder, cache_dir=out.resolve() / "cache",
                     amp=resolve_amp(cfg["runtime"]["amp"], dev), amp_dtype=resolve_amp_dtype(cfg["runtime"]["amp_dtype"]),
                     compile=bool(cfg["runtime"]["compile"]),
                     curves=curves, progress=progress, health=health)
    with normalised_with(cfg["model"]["mean"], cfg["model"]["std"]):  # training and the test pass
        try:
            trained: Trained = spec.train(split, cfg, ctx)
        finally:
            progress.close()
            if curves is not None:
                curves.close()
        if not main:
            return None

        batch = int(cfg["train"]["eval_batch_size"])
        best_logits = predict_logits(trained.best, split.test, dev, batch)
        last_logits = best_logits if trained.last is trained.best else predict_logits(trained.last, split.test, dev, batch)
        correct = (best_logits.argmax(1).numpy() == split.test.labels)
        _save_outputs(folder, trained, split, best_logits, dev, batch, bool(cfg["runtime"]["save_model"]))
    wall = time.perf_counter() - start
    record = {
        "method": cell.method, "mode": cell.mode, "dataset": cell.dataset, "labels": cell.labels,
        "seed": cell.seed, "profile": cfg["profile"], **spec.describe(),
        "test_top1": float(correct.mean() * 100),
        "test_top1_last": float((last_logits.argmax(1).numpy() == split.test.labels).mean() * 100),
        "val_top1_best": trained.val_top1_best,
        "test_top1_ci95": list(bootstrap_ci95(correct, seed=cell.seed)),
        "n_labeled": len(split.labeled), "n_unlabeled": len(split.unlabeled),
        "n_val": len(split.val), "n_test": len(split.test),
        "iterations": trained.iterations, "wall_s": round(wall, 2), "stage_s": progress.stage_s, "device": str(dev),
        "peak_rss_mb": round(peak_rss_mb(), 1), "config": cfg, "config_hash": chash,
        "code_version": code_version(), "info": trained.info,
        **health.summary(), "collapsed": collapsed(best_logits.argmax(1).numpy(), split.num_classes),
    }
    write_json_atomic(folder / RECORD, record)
    for checkpoint in folder.glob(CHECKPOINTS):  # only after the record: a kill in between loses nothing
        checkpoint.unlink()
    _log.info("finished: test_top1 %.2f, val_top1_best %.2f, %.1f s", record["test_top1"],
              record["val_top1_best"], wall)
    return record


@torch.no_grad()
def _save_outputs(folder: Path, trained: Trained, split, logits: torch.Tensor, device, batch_size: int,
                  save_model: bool) -> None:
    """The selected model's test-set features (with the class names, for legends), so figures never
    retrain anything, and its weights when asked for. Both files are complete before the record exists."""
    model = trained.best.eval()
    feats = [model.embed(b).float().cpu() for b, _ in eval_batches(split.test, batch_size, device)]
    with atomic_write(folder / "test_outputs.npz") as tmp, open(tmp, "wb") as f:
        # a file object: np.savez would append ".npz" to a name
        np.savez(f, features=torch.cat(feats).numpy(), labels=split.test.labels, logits=logits.numpy(),
                 index=split.test.index, classes=np.asarray(split.classes))
    if save_model:
        atomic_save(trained.best.state_dict(), folder / MODEL)
