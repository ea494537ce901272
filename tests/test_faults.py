"""Fault injection: a smoke grid killed with SIGKILL at random moments, its files damaged, its disk
filled, two `run` commands on one output folder, and bad values on the command line. After each
fault the next `run` must finish every cell, lose and duplicate none, leave no held lock, no
temporary file and no helper process, and give the records of an uninterrupted run (test_top1 and
the saved test logits, bit for bit). docs/reliability.md has the table of faults and the counts.

Commands that must be killed run as processes; the others run in this process (`cli.main`), which
spares a Python start-up each."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import benchmark.kit.training as training
from benchmark.cli import main
from benchmark.harness.config import build_config
from benchmark.kit.data import load_dataset
from benchmark.kit.files import file_lock, lock_holder

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parent.parent
# Two cells: FixMatch in single mode (with its RandAugment worker process) and the supervised bound.
GRID = ["run", "--method", "fixmatch,supervised", "--modes", "single", "--labels", "50", "--profile", "smoke", "--workers", "1",
        "--device", "cpu", "--set", "train.iterations=300", "--set", "train.eval_every=20"]
CELLS = ["synthetic/fixmatch/single/labels50/seed0", "synthetic/supervised/single/labels50/seed0"]
KILLS = 5
KILL_SEED = 13  # the moments of the kills: fixed, so a failure can be replayed
KILL_WINDOW_S = (0.0, 1.0)  # after the run has logged new training steps
ORPHAN_WAIT_S = 10.0  # how long a killed run's helper processes may take to notice and exit


def _args(base: list[str], out: Path, *extra: str) -> list[str]:
    return [*base, "--out", str(out), "--reports", str(out.parent / (out.name + "-reports")), *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The grid run once, uninterrupted."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert main(_args(GRID, out)) == 0
    return out


def _records(out: Path) -> dict[str, dict]:
    return {str(p.parent.relative_to(out / "runs")): json.loads(p.read_text()) for p in (out / "runs").rglob("result.json")}


def assert_whole_and_equal(out: Path, reference: Path) -> int:
    """Every cell exactly once, no held lock, no temporary file, records equal to the reference's;
    returns how many records were compared."""
    records = _records(out)
    assert sorted(records) == CELLS
    table = (out / "results.csv").read_text().splitlines()
    assert len(table) == 1 + len(CELLS)
    for lock in out.rglob("*.lock"):
        assert lock_holder(lock) is None, lock
    assert [str(p) for p in out.rglob("*.tmp")] == []
    want = _records(reference)
    for cell, record in records.items():
        assert record["test_top1"] == want[cell]["test_top1"], cell
        assert record["config_hash"] == want[cell]["config_hash"], cell
        with np.load(out / "runs" / cell / "test_outputs.npz") as got, \
                np.load(reference / "runs" / cell / "test_outputs.npz") as expected:
            np.testing.assert_array_equal(got["logits"], expected["logits"])
    return len(records)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")  # a zombie has ended


def _start(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "benchmark", *_args(GRID, out)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _steps_logged(out: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in out.rglob("curves.jsonl"))


def _wait_for_training(proc: subprocess.Popen, out: Path, timeout_s: float = 300.0) -> bool:
    """Wait until the run logs training steps it had not logged before (so a kill lands in training,
    not in the imports); False when the run ended first."""
    before = _steps_logged(out)
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        if _steps_logged(out) > before:
            return True
        time.sleep(0.05)
    return False


def test_sigkill_at_random_moments_then_rerun(tmp_path: Path, reference: Path) -> None:
    """The run process itself is killed (its helpers are not): they must end by themselves and
    release every lock, and each next run resumes; the last one finishes the grid."""
    out = tmp_path / "out"
    rng = np.random.default_rng(KILL_SEED)
    survived = 0
    for delay in rng.uniform(*KILL_WINDOW_S, size=KILLS):
        proc = _start(out)
        if not _wait_for_training(proc, out):  # the grid was finished before this kill
            break
        time.sleep(delay)
        helpers = _children(proc.pid)
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + ORPHAN_WAIT_S
        while any(_alive(p) for p in helpers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in helpers if _alive(p)], "a helper process outlived its killed run"
        survived += 1
    assert survived >= 3, "the grid finished before most kills: make it longer"
    proc = _start(out)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    assert_whole_and_equal(out, reference)


def test_two_runs_on_one_out_run_each_cell_once(tmp_path: Path, reference: Path) -> None:
    out = tmp_path / "out"
    procs = [_start(out) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert_whole_and_equal(out, reference)
    for cell in CELLS:  # one process trained it, the other skipped it
        assert (out / "runs" / cell / "run.log").read_text().count(" run synthetic/") == 1


def test_damaged_record_outputs_and_cache_are_rebuilt(tmp_path: Path, reference: Path, capsys) -> None:
    """A truncated record, a truncated test_outputs.npz and a truncated cache array: one line each
    naming the file, then the cells they belong to run again (the cache is built again)."""
    out = tmp_path / "out"
    assert main(_args(GRID, out)) == 0
    record = out / "runs" / CELLS[0] / "result.json"
    outputs = out / "runs" / CELLS[1] / "test_outputs.npz"
    for path in (record, outputs):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    cache = load_dataset(build_config("smoke", "supervised", "single", "synthetic", 50, 0).data)[1]
    wli = cache / "wli.npy"
    wli.write_bytes(wli.read_bytes()[:1000])
    capsys.readouterr()

    for command in (["report"], ["umap", "--labels", "50"]):  # before the re-run: a one-line answer, no traceback
        code = main([*command, "--out", str(out), "--reports", str(tmp_path / "reports")])
        err = capsys.readouterr().err
        assert f"damaged file {record}" in err and "Traceback" not in err
        if command[0] == "umap":
            assert code == 2 and str(outputs) in err

    assert main(_args(GRID, out)) == 0
    err = capsys.readouterr().err
    for path in (wli, outputs):
        assert f"damaged file {path}" in err
    assert assert_whole_and_equal(out, reference) == 2


def test_truncated_checkpoint_starts_the_run_over(tmp_path: Path, reference: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "out"
    save = training.atomic_save

    def save_then_interrupt(obj, path):  # as if Ctrl-C came right after the first checkpoint
        save(obj, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "atomic_save", save_then_interrupt)
    assert main(_args(GRID, out, "--method", "supervised")) == 130
    monkeypatch.undo()
    checkpoint = out / "runs" / CELLS[1] / "train_checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:-100])
    capsys.readouterr()
    assert main(_args(GRID, out)) == 0
    assert f"damaged file {checkpoint}" in capsys.readouterr().err
    assert_whole_and_equal(out, reference)


def test_full_disk_is_one_line_then_the_rerun_finishes(tmp_path: Path, reference: Path, capsys) -> None:
    """--out on a 200 KB tmpfs (mounting needs root: skipped elsewhere), then the same tmpfs made larger."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip() or 'mount failed'}")
    try:
        out = disk / "out"
        assert main(_args(GRID, out)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: cannot write ") and err[-1].endswith("No space left on device"), err
        assert not any("Traceback" in line for line in err)
        subprocess.run(["mount", "-o", "remount,size=50m", str(disk)], check=True)
        assert main(_args(GRID, out)) == 0
        assert_whole_and_equal(out, reference)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        assert main(_args(GRID, out)) == 0  # a finished read-only folder: a no-op
        assert main(_args(GRID, disk / "other", "--labels", "30")) == 2
        assert "is not writable: Read-only file system" in capsys.readouterr().err
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_lock_held_for_a_gone_process_does_not_exit_0(tmp_path: Path, capsys) -> None:
    """A cell whose lock is held while the process it names has ended (the lock was inherited by
    another process) is reported and the run exits 1, instead of ending as if another run had it."""
    out = tmp_path / "out"
    args = _args(GRID, out, "--method", "supervised")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = out / "runs" / CELLS[1].rsplit("/", 1)[0] / "seed0.lock"
    with file_lock(lock, wait=False) as held:
        assert held
        lock.write_text(f"{socket.gethostname()} pid {gone.stdout.strip()} since then")
        capsys.readouterr()
        assert main(args) == 1
        assert "which has ended" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--labels", "10,10.000001"], "more digits than its folder name labels10"),
    (["--seeds", "-1"], "bad seed -1"),
    (["--seeds", "1.5"], "bad seeds '1.5'"),
    (["--labels", "50,100"], "fixmatch trains on unlabeled images, and 100% labels"),
])
def test_bad_values_are_one_line_before_any_cell(tmp_path: Path, capsys, extra, message) -> None:
    out = tmp_path / "out"
    assert main(_args(GRID, out, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (out / "runs").exists()


def test_out_that_is_a_file_and_empty_results_csv(tmp_path: Path, capsys) -> None:
    path = tmp_path / "file"
    path.write_text("")
    assert main(_args(GRID, path)) == 2
    assert f"--out {path} is a file" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "results.csv").write_text("")
    assert main(["report", "--out", str(empty), "--reports", str(tmp_path / "reports")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no results in"), err
