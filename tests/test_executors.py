"""Executors: local worker processes and Slurm jobs (through submitit) give the records of the sequential
run, a crashed cell is reported with its log while the others finish, and the Slurm path submits
the configured jobs, with MICS's pre-training dependencies, only for the cells without a record.

Worker processes import `methods` (slow), so this file starts as few as it can: two workers (and
one restart) for the pool, four submitit local jobs, and no process at all for the sbatch scripts,
which a stand-in `sbatch` records instead of submitting."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
import submitit

import benchmark.harness.executors as executors
from benchmark.cli import main
from benchmark.harness.config import config_hash
from benchmark.harness.grid import Cell, configured
from benchmark.kit.files import file_lock
from benchmark.kit.schema import ExecutorConfig
from methods.registry import _REGISTRY, Cost, Stage, get_method, register_method

TESTS = Path(__file__).resolve().parent
SMOKE = ["--profile", "smoke", "--device", "cpu"]
GOOD = ["run", "--method", "supervised,fullysupervised", "--labels", "20,50", *SMOKE]
GOOD_CELLS = ["synthetic/supervised/single/labels20/seed0", "synthetic/supervised/single/labels50/seed0",
              "synthetic/fullysupervised/single/labels100/seed0"]
CRASHED = "synthetic/toy_crash/single/labels50/seed0"


def _crash(data, cfg, ctx):
    """Dies as the kernel's out-of-memory killer would end it: no exception, no record, no marker."""
    os.kill(os.getpid(), signal.SIGKILL)


if "toy_crash" not in _REGISTRY:  # worker processes import this file again, to find the method
    register_method("toy_crash", modes=("single",), fixed_labels=50.0, description="killed mid-run", group="test")(
        _crash)


def _args(base: list[str], out: Path, *extra: str) -> list[str]:
    return [*base, "--out", str(out), "--reports", str(out.parent / (out.name + "-reports")), *extra]


def _assert_same_records(out: Path, reference: Path) -> None:
    for key in GOOD_CELLS:
        ours, theirs = out / "runs" / key, reference / "runs" / key
        got, want = json.loads((ours / "result.json").read_text()), json.loads((theirs / "result.json").read_text())
        for field in ("test_top1", "test_top1_last", "val_top1_best", "iterations", "config_hash"):
            assert got[field] == want[field], (key, field)
        np.testing.assert_array_equal(np.load(ours / "test_outputs.npz")["logits"],
                                      np.load(theirs / "test_outputs.npz")["logits"])


def _start_the_augmenter() -> int:
    """In a worker process: start the RandAugment worker, as a single-mode cell does, and use it."""
    from methods.common import augmenter, warm_augmenter
    warm_augmenter()
    return augmenter().process.pid


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The default executor: the good cells one after the other, in this process."""
    out = tmp_path_factory.mktemp("sequential") / "out"
    assert main(_args(GOOD, out)) == 0
    return out


def test_workers_give_the_sequential_records_and_survive_a_crash(reference, tmp_path, monkeypatch, capsys) -> None:
    """Two workers; one is killed mid-cell and replaced. The `bounds` family is made to share a
    pre-training here, so its later cells must wait for the first one to end."""
    shared = Cost(stages=(Stage("train", shared_key=lambda cfg: f"{cfg.data.name}-{cfg.seed}"),))
    for name in ("supervised", "fullysupervised"):
        monkeypatch.setitem(_REGISTRY, name, dataclasses.replace(get_method(name), cost=shared))
    out = tmp_path / "out"
    grid = ["run", "--method", "supervised,fullysupervised,toy_crash", "--labels", "20,50", *SMOKE]
    assert main(_args(grid, out, "--workers", "2")) == 1
    printed = capsys.readouterr().out
    assert "4 cells: 0 already done, 4 to run in 2 workers" in printed
    assert f"failed: {CRASHED}: the worker process died" in printed
    assert f"(log: {out.resolve() / 'runs' / CRASHED / 'run.log'})" in printed
    assert "3 finished, 0 already done, 1 failed" in printed
    _assert_same_records(out, reference)
    leader_end = (out / "runs" / GOOD_CELLS[0] / "result.json").stat().st_mtime_ns
    for follower in GOOD_CELLS[1:]:
        assert (out / "runs" / follower / "config_hash").stat().st_mtime_ns >= leader_end, follower
    assert len(open(out / "results.csv").readlines()) == 1 + 3


def test_a_worker_that_started_the_augmenter_ends_when_closed() -> None:
    """A `--workers` slot whose cells used the RandAugment worker (single mode) ends when the grid closes
    it: the augmenter is shut down at the slot's exit, before multiprocessing stops the queue that
    carries the augmenter's stop message; otherwise the grid waits forever after its last cell."""
    slot = executors._Worker(0, 2, "cpu")
    assert slot.pool.submit(_start_the_augmenter).result(timeout=120) > 0
    closing = threading.Thread(target=slot.close, daemon=True)
    closing.start()
    closing.join(timeout=60)
    stuck = closing.is_alive()
    if stuck:  # end the worker, or this test session would wait for it at its own exit
        for process in list(slot.pool._processes.values()):
            process.kill()
    assert not stuck, "the worker did not end: its augmenter was never stopped"


def test_slurm_path_on_submitits_local_executor(reference, tmp_path, monkeypatch, capsys) -> None:
    """`--executor slurm --wait` with `executor.cluster=local`: the very jobs Slurm would get, run as
    local processes by submitit; one of them is killed."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(executors, "POLL_S", 0.5)
    # How long submitit waits for the result file of an ended job (for slow shared file systems): the
    # killed job writes none, and a local disk needs no 15 s.
    monkeypatch.setattr(submitit.LocalJob, "_results_timeout_s", 1)
    out = tmp_path / "out"
    grid = ["run", "--method", "supervised,fullysupervised,toy_crash", "--labels", "20,50", *SMOKE]
    assert main(_args(grid, out, "--executor", "slurm", "--set", "executor.cluster=local", "--wait")) == 1
    printed = capsys.readouterr().out
    assert "4 cells: 0 already done, 0 running elsewhere, 4 submitted (local;" in printed
    assert f"failed: {CRASHED}: job " in printed and "ended without a result" in printed
    assert "_0_log.err)" in printed  # the crashed job's error log
    assert "3 finished, 0 already done, 1 failed" in printed
    _assert_same_records(out, reference)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """`srun` and `sbatch` stand-ins on PATH: sbatch keeps a copy of each script and answers with a
    new job id, as Slurm's does; nothing runs."""
    bin_dir, spool = tmp_path / "bin", tmp_path / "spool"
    bin_dir.mkdir()
    spool.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").write_text(
        "#!/bin/sh\n"
        f'n=$(ls "{spool}" | wc -l); id=$((101 + n))\n'
        f'cp "$1" "{spool}/$id.sh"\n'
        'echo "Submitted batch job $id"\n')
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), os.environ["PATH"]]))
    return spool


def test_slurm_submission_settings_dependencies_and_resubmission(reference, tmp_path, fake_slurm, capsys) -> None:
    """Over a folder where some cells are done and one is held: only the others are submitted, with the
    profile's settings and `--set` overrides in their sbatch scripts; each seed's first MICS cell
    goes first, and the other MICS cell of that seed depends on its job."""
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    held = Cell("synthetic", "supervised", "single", 50.0, 1)
    settings = ["--set", "executor.partition=gpu", "--set", "executor.time_min=90", "--set", "executor.gpus_per_job=2",
                "--set", "executor.cpus_per_job=6", "--set", "executor.mem_gb=12", "--set", "executor.array_parallelism=2",
                "--set", "executor.sbatch={account: proj, qos: high}"]
    grid = ["run", "--method", "supervised,mics", "--labels", "20,50", "--seeds", "0,1", *SMOKE]
    with file_lock(held.lock(out), wait=False) as claimed:
        assert claimed
        assert main(_args(grid, out, "--executor", "slurm", *settings)) == 0
    printed = capsys.readouterr().out
    assert "8 cells: 2 already done, 1 running elsewhere, 5 submitted (slurm;" in printed

    scripts = {p.stem: p.read_text() for p in sorted(fake_slurm.iterdir())}
    assert sorted(scripts) == ["101", "102", "103"]
    first, follow0, follow1 = scripts["101"], scripts["102"], scripts["103"]
    for line in ("--partition=gpu", "--time=90", "--gpus-per-node=2", "--cpus-per-task=6", "--mem=12GB",
                 "--account=proj", "--qos=high", "--job-name=mics-bench"):
        assert f"#SBATCH {line}\n" in first and f"#SBATCH {line}\n" in follow0, line
    assert "#SBATCH --array=0-2%2\n" in first and "dependency" not in first
    assert "#SBATCH --dependency=afterany:101_0\n" in follow0 and "--array" not in follow0
    assert "#SBATCH --dependency=afterany:101_1\n" in follow1

    def submitted(job_id: str) -> executors.CellTask:
        return submitit.helpers.DelayedSubmission.load(out / "slurm" / job_id / f"{job_id}_submitted.pkl").function

    expected = {"101_0": Cell("synthetic", "mics", "fused", 20.0, 0), "101_1": Cell("synthetic", "mics", "fused", 20.0, 1),
                "101_2": Cell("synthetic", "supervised", "single", 20.0, 1), "102": Cell("synthetic", "mics", "fused", 50.0, 0),
                "103": Cell("synthetic", "mics", "fused", 50.0, 1)}
    for job_id, cell in expected.items():
        task = submitted(job_id)
        assert task.cell == cell and task.out == out.resolve() and "executor" not in task.cell.cfg.plain()
        assert f"  {job_id:<12} {cell}" in printed
    assert "synthetic/mics/fused/labels50/seed1  (after 101_1)" in printed
    [cell] = configured([expected["102"]], "smoke", None, None, None)
    assert submitted("102").cell.cfg.executor != cell.cfg.executor  # --set executor.*: another partition, ...
    assert config_hash(submitted("102").cell.cfg) == config_hash(cell.cfg)  # the executor section is not in the hash


def test_slurm_executor_parameters(tmp_path, fake_slurm) -> None:
    """What the `executor` section asks for reaches submitit's Slurm executor, in sbatch's terms."""
    settings = ExecutorConfig(partition="gpu", time_min=30, gpus_per_job=0, cpus_per_job=3, mem_gb=5.5,
                              array_parallelism=8, sbatch={"account": "proj"}, cluster="slurm")
    params = executors.slurm_executor(settings, tmp_path / "jobs", "afterany:7").parameters
    assert params == {"job_name": "mics-bench", "time": 30, "cpus_per_task": 3, "mem": "5632MB", "partition": "gpu",
                      "array_parallelism": 8, "additional_parameters": {"account": "proj", "dependency": "afterany:7"}}
    assert settings.sbatch == {"account": "proj"}  # the dependency went into a copy


@pytest.mark.parametrize("extra, message", [
    (["--executor", "slurm"], "--executor slurm: Could not detect \"srun\""),
    (["--executor", "slurm", "--set", "executor.cluster=mars"], "bad value 'mars' for executor.cluster"),
    (["--executor", "slurm", "--workers", "2"], "--workers is for --executor local"),
    (["--workers", "0"], "bad --workers 0"),
    (["--executor", "pbs"], "invalid choice: 'pbs'"),
])
def test_bad_executor_input_exits_2_with_one_line(extra, message, tmp_path, capsys) -> None:
    try:
        code = main(_args(["run", "--method", "supervised", "--labels", "50", *SMOKE], tmp_path / "out", *extra))
    except SystemExit as exit_:  # argparse's own usage errors
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
