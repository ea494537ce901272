"""The grid runner: resume after a real kill, two processes on one folder, failed cells, config
changes, per-cell overrides and one-line errors. Toy methods registered here (modes single and
multi, group "test") train a linear model in milliseconds through the real TrainingLoop, so the
checkpoints, curves and records are the real ones."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import benchmark.harness.config
from benchmark.cli import main
from benchmark.harness.grid import Cell, configured
from benchmark.kit.curves import read_curves
from benchmark.kit.data.loaders import to_tensor
from benchmark.kit.training import TrainingLoop
from methods.common import LabeledBatches
from methods.registry import _REGISTRY, register_method
from methods.schema import MethodConfig

TESTS = Path(__file__).resolve().parent
SLEEP_ENV = "MICS_TOY_STEP_SLEEP"  # seconds per step; set only in subprocesses, so kills land mid-run
GRID = ["run", "--method", "toy_a,toy_b", "--labels", "10,50", "--profile", "smoke", "--device", "cpu", "--workers", "1",
        "--set", "train.iterations=12", "--set", "train.eval_every=3"]
# A subprocess that registers the toy methods (by importing this file) and runs the CLI.
SCRIPT = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); import test_runner; "
          "from benchmark.cli import main; sys.exit(main(sys.argv[1:]))")


class _Toy(nn.Module):
    """A linear classifier on 4x4-pooled images."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(3 * 4 * 4, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 4).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))

    def predict(self, batch):
        return self(batch["wli"])

    def embed(self, batch):
        return self.features(batch["wli"])


def _train_toy(data, cfg, ctx, nan_from: int | None = None):
    model = _Toy(data.num_classes).to(ctx.device)
    labeled = LabeledBatches(data.labeled, int(cfg.train.batch_size), ctx.seed, ctx.device)
    sleep = float(os.environ.get(SLEEP_ENV, "0"))

    def step(it: int) -> dict:
        time.sleep(sleep)
        x, y = labeled(it)
        loss = F.cross_entropy(model(x), y)
        if cfg.method.mode == "multi":  # the NBI partners of the same pairs as extra views
            nbi = to_tensor(data.labeled.nbi[labeled.stream.indices(it)], ctx.device)
            loss = loss + F.cross_entropy(model(nbi), y)
        if nan_from is not None and it >= nan_from:
            loss = loss * float("nan")
        return {"loss": loss}

    return TrainingLoop(model, cfg.train, ctx, data.val).run(step)


class _ToyConfig(MethodConfig):
    T: float = 0.5  # a key toy_a has and toy_b has not


if "toy_a" not in _REGISTRY:  # this file is imported both by pytest and by the subprocesses
    register_method("toy_a", modes=("single", "multi"), description="test toy", group="test",
                    config=_ToyConfig)(_train_toy)
    register_method("toy_b", modes=("single", "multi"), description="test toy", group="test")(_train_toy)
    register_method("toy_nan", modes=("single",), description="loss NaN from iteration 2", group="test")(
        lambda data, cfg, ctx: _train_toy(data, cfg, ctx, nan_from=2))


def _records(out: Path) -> dict[str, dict]:
    return {str(p.parent.relative_to(out / "runs")): json.loads(p.read_text())
            for p in sorted(out.glob("runs/*/*/*/*/*/result.json"))}


def _spawn(args: list[str], sleep: float) -> subprocess.Popen:
    env = dict(os.environ, **{SLEEP_ENV: str(sleep)})
    return subprocess.Popen([sys.executable, "-c", SCRIPT, *args], env=env, cwd=TESTS.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _interrupted_cell(out: Path) -> Path | None:
    """A run folder with a checkpoint and no record, once some other cell has finished."""
    if not any(out.glob("runs/*/*/*/*/*/result.json")):
        return None
    for checkpoint in out.glob("runs/*/*/*/*/*/*_checkpoint.pt"):
        if not (checkpoint.parent / "result.json").exists():
            return checkpoint.parent
    return None


def _starts(folder: Path) -> int:
    """How many times a run was started in `folder` (its log has one line per start)."""
    return sum(" run synthetic/" in line for line in (folder / "run.log").read_text().splitlines())


def test_two_runs_share_a_folder_and_a_killed_one_resumes_exactly(tmp_path: Path) -> None:
    """Two `run` processes on one folder; the one holding an unfinished cell is SIGKILLed; a re-run
    resumes that cell from its checkpoint and repeats nothing; the records, outputs and curves are
    those of an uninterrupted grid."""
    out, clean = tmp_path / "shared", tmp_path / "clean"
    args = GRID + ["--out", str(out), "--reports", str(tmp_path / "r1")]
    procs = [_spawn(args, sleep=0.05) for _ in range(2)]
    deadline, victim = time.monotonic() + 120, None
    while victim is None and all(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.02)
        interrupted = _interrupted_cell(out)
        holder = interrupted.with_name(interrupted.name + ".lock").read_text() if interrupted else ""
        victim = next((p for p in procs if f" pid {p.pid} " in holder), None)
        if victim is not None:
            victim.send_signal(signal.SIGSTOP)  # frozen mid-run, unless it finished that cell meanwhile
            if (interrupted / "result.json").exists():
                victim.send_signal(signal.SIGCONT)
                victim = None
    assert victim is not None, "no run was caught mid-way:\n" + "\n".join(p.communicate()[0] for p in procs)
    survivor = next(p for p in procs if p is not victim)
    survivor.send_signal(signal.SIGSTOP)  # holds still while we look at what the kill left
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert list(interrupted.glob("*_checkpoint.pt")) and not (interrupted / "result.json").exists()
    survivor.send_signal(signal.SIGCONT)
    assert survivor.wait(timeout=180) == 0, survivor.communicate()[0]
    before = _records(out)

    assert main(GRID + ["--out", str(out), "--reports", str(tmp_path / "r2")]) == 0
    assert "resuming from train_checkpoint.pt" in (interrupted / "run.log").read_text()
    assert main(GRID + ["--out", str(clean), "--reports", str(tmp_path / "r3")]) == 0

    after, reference = _records(out), _records(clean)
    assert sorted(after) == sorted(reference) and len(after) == 8
    for key, rec in before.items():  # finished before the re-run: kept, not repeated
        assert after[key] == rec
    for key, rec in reference.items():
        assert _starts(out / "runs" / key) == (2 if out / "runs" / key == interrupted else 1), key
        for field in ("test_top1", "test_top1_last", "val_top1_best", "test_top1_ci95", "iterations", "config_hash"):
            assert after[key][field] == rec[field], (key, field)
        np.testing.assert_array_equal(np.load(out / "runs" / key / "test_outputs.npz")["logits"],
                                      np.load(clean / "runs" / key / "test_outputs.npz")["logits"])
        assert read_curves(out / "runs" / key) == read_curves(clean / "runs" / key), key
    assert not list(out.glob("runs/**/*_checkpoint.pt")) and not list(out.glob("runs/**/failed.json"))
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 8 and not table.duplicated(["dataset", "method", "mode", "labels", "seed"]).any()
    assert (tmp_path / "r2" / "table2.tex").exists() and (tmp_path / "r2" / "accuracy_vs_labels.png").exists()

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/*/*/*/result.json")}
    assert main(GRID + ["--out", str(out), "--reports", str(tmp_path / "r2")]) == 0
    assert stamps == {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/*/*/*/result.json")}


def test_nan_loss_marks_the_cell_failed_and_the_grid_goes_on(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    args = ["run", "--method", "toy_nan,toy_a", "--modes", "single", "--labels", "50", "--profile", "smoke",
            "--device", "cpu", "--out", str(out), "--reports", str(tmp_path / "reports")]
    assert main(args) == 1
    printed = capsys.readouterr().out
    failed = out / "runs/synthetic/toy_nan/single/labels50/seed0"
    assert "failed: synthetic/toy_nan/single/labels50/seed0: NonFiniteLoss" in printed
    assert "loss is nan at iteration 2" in json.loads((failed / "failed.json").read_text())["message"]
    log = (failed / "run.log").read_text()
    assert "FAILED: NonFiniteLoss" in log and "Traceback" in log
    assert not (failed / "result.json").exists()
    assert (out / "runs/synthetic/toy_a/single/labels50/seed0/result.json").exists()
    assert list(pd.read_csv(out / "results.csv")["method"]) == ["toy_a"]
    assert main(args + ["--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert "failed   synthetic/toy_nan/single/labels50/seed0" in listing
    assert "done     synthetic/toy_a/single/labels50/seed0" in listing


def test_a_holder_that_ends_after_the_take_over_check_is_not_reported_abandoned(tmp_path: Path, monkeypatch,
                                                                                capsys) -> None:
    """The cell's lock is held by another process when the grid and the take-over look; that process ends before
    the command sums up. Its lock went with it, so nothing is abandoned: the command exits 0 (a stale look at
    the lock made it exit 1), and the next run does the cell."""
    import benchmark.commands.run as run_command

    out = tmp_path / "out"
    lock = Cell("synthetic", "toy_b", "single", 50.0, 0).lock(out)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from benchmark.kit.files import file_lock\n"
                               "with file_lock(sys.argv[1], wait=False) as held:\n"
                               "    print(held, flush=True); time.sleep(120)", str(lock)],
                              cwd=TESTS.parent, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "True"
    real_take_over = run_command._take_over

    def take_over_then_the_holder_ends(*args):
        outcomes = real_take_over(*args)  # the lock is held: nothing to take over
        holder.kill()
        holder.wait()
        return outcomes

    monkeypatch.setattr(run_command, "_take_over", take_over_then_the_holder_ends)
    args = ["run", "--method", "toy_b", "--modes", "single", "--labels", "50", "--profile", "smoke", "--device", "cpu",
            "--workers", "1", "--out", str(out), "--reports", str(tmp_path / "reports")]
    try:
        assert main(args) == 0
    finally:
        holder.kill()
    printed = capsys.readouterr().out
    assert "1 left to another process" in printed and "which has ended" not in printed
    monkeypatch.setattr(run_command, "_take_over", real_take_over)
    assert main(args) == 0 and (out / "runs/synthetic/toy_b/single/labels50/seed0/result.json").exists()

def test_changed_config_reruns_and_same_config_skips(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    base = ["run", "--method", "toy_a", "--modes", "single", "--labels", "50", "--profile", "smoke",
            "--device", "cpu", "--out", str(out), "--reports", str(tmp_path / "reports")]
    folder = out / "runs/synthetic/toy_a/single/labels50/seed0"
    assert main(base) == 0
    capsys.readouterr()
    first = json.loads((folder / "result.json").read_text())
    assert main(base + ["--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("done ")
    changed = base + ["--set", "train.iterations=9"]
    assert main(changed + ["--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("rerun ")
    assert main(changed) == 0
    assert "1 cells: 0 already done, 1 to run" in capsys.readouterr().out
    second = json.loads((folder / "result.json").read_text())
    assert second["iterations"] == 9 and second["config_hash"] != first["config_hash"]
    assert "starting over with config" in (folder / "run.log").read_text()
    assert main(changed) == 0
    assert "1 already done, 0 to run" in capsys.readouterr().out
    for name in ("run.log", "curves.jsonl", "test_outputs.npz", "config_hash"):
        assert (folder / name).exists(), name
    assert list((folder / "tensorboard").iterdir())


def test_override_applies_to_the_cells_that_have_its_key(monkeypatch, tmp_path: Path, capsys) -> None:
    real = benchmark.harness.config.method_config
    monkeypatch.setattr(benchmark.harness.config, "method_config",
                        lambda method, profile: ({"T": 0.5}, "toy") if method == "toy_a" else real(method, profile))
    cells = [Cell("synthetic", "toy_a", "single", 50.0, 0), Cell("synthetic", "toy_b", "single", 50.0, 0)]
    a, b = configured(cells, "smoke", {"method.T": 0.9}, None, None)
    assert a.cfg.method.T == 0.9 and "T" not in b.cfg.method.model_dump()
    args = ["run", "--method", "toy_b", "--profile", "smoke", "--out", str(tmp_path), "--dry-run"]
    assert main(args + ["--set", "method.T=0.9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'T'" in err


@pytest.mark.parametrize("argv, message", [
    (["run", "--method", "nosuch"], "unknown method 'nosuch'"),
    (["run", "--dataset", "nosuch"], "unknown dataset 'nosuch'"),
    (["run", "--profile", "nosuch"], "unknown profile 'nosuch'"),
    (["run", "--modes", "bogus"], "unknown mode 'bogus'"),
    (["run", "--labels", "0"], "outside (0, 100]"),
    (["run", "--labels", "150"], "outside (0, 100]"),
    (["run", "--labels", "five"], "bad label ratios"),
    (["run", "--seeds", "x"], "bad seeds"),
    (["run", "--set", "novalue"], "bad --set 'novalue'"),
    (["run", "--set", "train.nosuch=1"], "'nosuch'"),
    (["run", "--device", "tpu"], "unknown device 'tpu'"),
    (["run", "--method", "supervised", "--modes", "multi"], "no cell"),
    (["report", "--format", "html"], "unknown format 'html'"),
    (["report"], "no results in"),
    (["umap"], "no results in"),
    (["umap", "--mode", "both"], "invalid choice"),
])
def test_bad_input_exits_2_with_one_line(argv, message, tmp_path: Path, capsys) -> None:
    argv = argv + ["--out", str(tmp_path / "none")] + (["--dry-run"] if argv[0] == "run" else [])
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own usage errors
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    from benchmark.kit.files import atomic_write

    path = tmp_path / "deep" / "result.json"
    with atomic_write(path) as tmp:
        tmp.write_text("first")
    with pytest.raises(RuntimeError), atomic_write(path) as tmp:
        tmp.write_text("half of the sec")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "first"
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]  # no temporary file left behind
