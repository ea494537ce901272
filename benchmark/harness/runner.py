"""Runs a grid's cells one after the other in this process (and under torchrun, in step with the other
processes), with the grid's progress bar and one summary line per cell."""
from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from benchmark.harness.cell import Outcome, is_done, run_cell
from benchmark.harness.grid import Cell
from benchmark.kit import distributed
from benchmark.kit.records import rebuild_results_csv


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


def run_grid(cells: list[Cell], out: Path,
             seconds: dict[Cell, float] | None = None) -> list[Outcome]:
    """Run the cells in order with a progress bar (weighted by `seconds`, the cells' estimated cost, when
    given), one summary line per cell, and `results.csv` rebuilt after every finished cell (so a killed
    grid leaves an up-to-date table). Under torchrun rank 0 decides which cells are pending and alone
    prints and writes."""
    distributed.init()
    main = distributed.is_main()
    done = distributed.broadcast_object([is_done(c, out) for c in cells])
    pending = [c for c, d in zip(cells, done) if not d]
    if main:
        print(f"{len(cells)} cells: {len(cells) - len(pending)} already done, {len(pending)} to run")
    outcomes = [Outcome(c, "done") for c, d in zip(cells, done) if d]
    with GridBar(pending, seconds, enabled=main) as bar:
        for i, cell in enumerate(pending, 1):
            outcome = run_cell(cell, out, show_progress=True)
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
