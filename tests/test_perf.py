"""`perf` and the speed-ups it measures: the record's schema and arithmetic (never timing thresholds),
the grid estimate of `run --dry-run`, and that the faster batch code makes the very same batches."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.cli import main
from benchmark.kit.data.loaders import step_generator, to_tensor, weak_augment

STEPS = "2"


@pytest.fixture(scope="module")
def record(tmp_path_factory) -> tuple[dict, Path]:
    """One `perf` on the smoke profile, with a supervised bound and one SSL method in single mode."""
    reports = tmp_path_factory.mktemp("reports")
    code = main(["perf", "--profile", "smoke", "--device", "cpu", "--threads", "1", "--method", "supervised,fixmatch",
                 "--modes", "single", "--steps", STEPS, "--reports", str(reports)])
    assert code == 0
    return json.loads((reports / "perf.json").read_text()), reports


def test_perf_json_has_every_figure(record) -> None:
    rec, _ = record
    assert rec["profile"] == "smoke"
    assert set(rec["methods"]) == {"supervised/single", "fixmatch/single"}
    for figures in rec["methods"].values():
        for key in ("ours_img_s", "bare_img_s", "overhead_ratio", "ours_step_s", "bare_step_s", "eval_img_s"):
            assert figures[key] > 0, key
        assert figures["overhead_ratio"] == pytest.approx(figures["ours_img_s"] / figures["bare_img_s"], rel=1e-12)
        assert figures["ours_img_s"] == pytest.approx(figures["images_per_step"] / figures["ours_step_s"], rel=1e-12)
        assert figures["timed_steps"] == int(STEPS)
    # the SSL step sends labeled + weak + strong batches through the network; the bound the labeled one
    smoke_batch = 8
    assert rec["methods"]["supervised/single"]["images_per_step"] == smoke_batch
    assert rec["methods"]["fixmatch/single"]["images_per_step"] == 3 * smoke_batch
    assert rec["loader"]["img_s"] > 0 and rec["loader"]["consumed_img_s"] > 0
    assert rec["loader"]["modes"]["single"]["images_per_step"] == 3 * smoke_batch
    assert rec["peak_rss_mb"] > 0 and rec["grid_estimate_s"] > 0 and rec["cell_overhead_s"] >= 0
    assert "stages" not in rec  # no method with several training loops measured
    assert "mics/fused" in rec["grid"]["unmeasured"]


def test_perf_measures_what_set_and_dataset_ask_for(tmp_path: Path) -> None:
    """`--set` reaches the measured runs (and the estimate's command), as it reaches `run`'s cells."""
    code = main(["perf", "--profile", "smoke", "--device", "cpu", "--threads", "1", "--method", "fixmatch",
                 "--modes", "multi", "--steps", STEPS, "--dataset", "synthetic", "--set", "train.batch_size=4",
                 "--reports", str(tmp_path)])
    assert code == 0
    rec = json.loads((tmp_path / "perf.json").read_text())
    assert rec["dataset"] == "synthetic"
    assert rec["methods"]["fixmatch/multi"]["images_per_step"] == 3 * 4
    assert rec["grid"]["command"].endswith("--set train.batch_size=4")


@pytest.mark.parametrize("args, message", [
    (["--set", "train.no_such_key=1"], "no_such_key"),
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["--dataset", "kvasir"], "--data-root"),
])
def test_perf_refuses_bad_input_before_measuring(args, message, tmp_path: Path, capsys) -> None:
    code = main(["perf", "--profile", "smoke", "--device", "cpu", "--method", "supervised", "--reports", str(tmp_path),
                 *args])
    assert code == 2
    captured = capsys.readouterr()
    assert message in captured.err and "perf:" not in captured.out
    assert not (tmp_path / "perf.json").exists()


def test_dry_run_prints_the_estimate(record, tmp_path: Path, capsys) -> None:
    rec, reports = record
    args = ["run", "--profile", "smoke", "--method", "supervised", "--labels", "5,50", "--out", str(tmp_path / "out"),
            "--dry-run"]
    assert main(args + ["--reports", str(reports)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("estimated wall time:") and "for 2 cells" in line
    assert main(args + ["--reports", str(tmp_path / "none")]) == 0
    assert "unknown" in capsys.readouterr().out.strip().splitlines()[-1]


def test_dry_run_of_a_finished_grid_has_nothing_to_estimate(tmp_path: Path, capsys) -> None:
    args = ["run", "--profile", "smoke", "--method", "supervised", "--labels", "5", "--out", str(tmp_path / "out"),
            "--reports", str(tmp_path / "reports")]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args + ["--dry-run"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "estimated wall time: 0 s, nothing to run"


def _pad_crop_flip(x: torch.Tensor, generator: torch.Generator, pad_fraction: float = 0.125) -> torch.Tensor:
    """USB's weak view as first written: reflect padding, a crop per image, then the flips."""
    n, _, h, w = x.shape
    pad = max(1, int(round(h * pad_fraction)))
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    out = torch.stack([padded[i, :, oy[i]:oy[i] + h, ox[i]:ox[i] + w] for i in range(n)])
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


@pytest.mark.parametrize("shape", [(6, 16, 16), (3, 9, 12), (4, 64, 64)])
def test_weak_augment_is_pad_crop_flip(shape) -> None:
    images = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    for step in range(5):
        fast = weak_augment(to_tensor(images), step_generator(0, step))
        assert fast.is_contiguous()
        assert torch.equal(fast, _pad_crop_flip(to_tensor(images), step_generator(0, step)))


@pytest.mark.parametrize("worker", [True, False])
@pytest.mark.parametrize("spare", [0, 1])
def test_strong_views_made_ahead_are_those_made_on_demand(worker: bool, spare: int, monkeypatch) -> None:
    """Single mode makes the next batches' strong sources in a worker process (when a core is free for
    it), and the next batch on a thread (`benchmark.kit.ahead`): a run resumed at any step, or batches asked
    for in any order, must see the same views, with or without either."""
    from benchmark.kit import ahead
    from benchmark.kit.data.types import PairedArrays
    from methods import common
    from methods.common import UnlabeledBatches

    monkeypatch.setattr(common, "augmenter_fits", lambda device: worker)
    monkeypatch.setattr(ahead, "spare_cores", lambda: spare)
    if worker:
        common.warm_augmenter()  # requests are sent once the worker is past its start-up

    rng = np.random.default_rng(2)
    part = PairedArrays(wli=rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8),
                        nbi=rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8),
                        labels=np.full(20, -1), index=np.arange(20))
    in_order = UnlabeledBatches(part, 8, 0, torch.device("cpu"), "single")
    expected = [in_order(it) for it in range(5)]
    ahead.settle()
    assert in_order._from_worker == worker and in_order.ahead == bool(spare)
    if worker:  # the next batches' sources are in the making (one batch further on when batch 5 is made)
        assert all(common.augmenter().asked((in_order._stream_id, k)) for k in (6, 7) if spare or k < 7)
    resumed = UnlabeledBatches(part, 8, 0, torch.device("cpu"), "single")
    for it in (3, 4, 1, 2, 0):
        for got, want in zip(resumed(it), expected[it]):
            assert torch.equal(got, want)


@pytest.mark.parametrize("spare", [0, 1])
def test_values_made_ahead_are_those_made_in_line(spare: int, monkeypatch) -> None:
    """`MadeAhead` makes step it + 1's value on the process's thread when a core is spare: asked for in order or
    not, each step's value is `make(step)`'s, and `settle()` returns once nothing is in the making."""
    import threading
    import time

    from benchmark.kit import ahead

    monkeypatch.setattr(ahead, "spare_cores", lambda: spare)
    made = []  # (step, the thread that made it), in the order made

    def value(it: int) -> torch.Tensor:
        return torch.randn(4, 8, generator=step_generator(0, it, salt=21))

    def make(it: int) -> torch.Tensor:
        time.sleep(0.01)
        made.append((it, threading.current_thread().name))
        return value(it)

    class Values(ahead.MadeAhead):
        def make(self, it: int) -> torch.Tensor:
            return make(it)

    values = Values(torch.device("cpu"))
    assert values.ahead == bool(spare)
    for it in (0, 1, 2, 5, 6, 3):
        assert torch.equal(values(it), value(it))
    ahead.settle()
    if spare:  # each asked-for step's successor made ahead, the unused ones (3, 7) too; 4 finished by `settle`
        assert [it for it, _ in made] == [0, 1, 2, 3, 5, 6, 7, 3, 4]
        assert all(name.startswith("made-ahead") for _, name in made)
    else:
        assert made == [(it, "MainThread") for it in (0, 1, 2, 5, 6, 3)]


def test_batch_streams_made_ahead_are_those_made_in_line(monkeypatch) -> None:
    """Labeled, paired and unlabeled batches, made a step ahead on the thread, are the batches made in line; a
    stream is freed with its last reference (no cycle keeps a run's data until the collector's next pass)."""
    import gc
    import weakref

    from benchmark.kit import ahead
    from benchmark.kit.data.types import PairedArrays
    from methods.common import LabeledBatches, PairedBatches, UnlabeledBatches

    rng = np.random.default_rng(4)
    part = PairedArrays(wli=rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8),
                        nbi=rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8),
                        labels=rng.integers(0, 3, 20), index=np.arange(20))
    cpu = torch.device("cpu")
    streams = {}
    for spare in (0, 1):
        monkeypatch.setattr(ahead, "spare_cores", lambda: spare)
        streams[spare] = [LabeledBatches(part, 4, 0, cpu), UnlabeledBatches(part, 8, 0, cpu, "multi"),
                          PairedBatches(part.wli, part.nbi, part.labels, 4, 0, cpu, salt=5)]
    assert not any(s.ahead for s in streams[0]) and all(s.ahead for s in streams[1])
    for it in (0, 1, 2, 4, 3, 5):
        for in_line, made_ahead in zip(streams[0], streams[1]):
            for want, got in zip(in_line(it), made_ahead(it)):
                assert torch.equal(want, got), (type(in_line).__name__, it)

    ahead.settle()
    gone = [weakref.ref(s) for spare in (0, 1) for s in streams[spare]]
    gc.disable()  # a stream, and the data it holds, goes with its last reference, not at a collection
    try:
        del streams, in_line, made_ahead
        assert all(ref() is None for ref in gone)
    finally:
        gc.enable()


def test_a_lost_augmenter_is_replaced_and_the_views_stay_the_same(monkeypatch) -> None:
    """The worker process killed between two steps (out of memory, say): the batch it owed is made in line,
    a new worker takes over, and every view is the one a run without a worker sees."""
    import signal

    from benchmark.kit.data.types import PairedArrays
    from methods import common
    from methods.common import UnlabeledBatches, augmenter, warm_augmenter

    rng = np.random.default_rng(3)
    part = PairedArrays(wli=rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8),
                        nbi=rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8),
                        labels=np.full(20, -1), index=np.arange(20))
    monkeypatch.setattr(common, "augmenter_fits", lambda device: False)
    in_line = UnlabeledBatches(part, 8, 0, torch.device("cpu"), "single")
    expected = [in_line(it) for it in range(6)]
    monkeypatch.setattr(common, "augmenter_fits", lambda device: True)
    warm_augmenter()
    stream = UnlabeledBatches(part, 8, 0, torch.device("cpu"), "single")
    first = augmenter().process
    for it in range(6):
        if it == 3:
            os.kill(first.pid, signal.SIGKILL)
            first.join(timeout=30)
        for got, want in zip(stream(it), expected[it]):
            assert torch.equal(got, want), it
    assert not first.is_alive() and augmenter().process.is_alive() and augmenter().process.pid != first.pid


# -- the cost before the first cell (benchmark/harness/costs.py) ------------------------------------------------------
def test_schedule_deals_cells_as_the_pool_does() -> None:
    from benchmark.harness.costs import schedule

    assert schedule([10, 10, 10, 10], 2, {}) == 20
    assert schedule([10, 10, 10, 10], 1, {}) == 40
    # cells 1 and 2 wait for cell 0 (their shared stage's leader): the free worker takes cell 3 meanwhile
    assert schedule([10, 5, 5, 1], 2, {1: 0, 2: 0}) == 15


def test_a_grid_leaves_its_costs_and_the_next_run_estimates_from_them(tmp_path: Path, capsys) -> None:
    out, reports = tmp_path / "out", tmp_path / "reports"
    grid = ["run", "--profile", "smoke", "--device", "cpu", "--method", "supervised", "--workers", "1",
            "--out", str(out), "--reports", str(reports)]
    assert main(grid + ["--labels", "10,50"]) == 0
    costs = json.loads((reports / "cell_costs.json").read_text())
    assert set(costs["cells"]) == {"supervised/single/10", "supervised/single/50"} and costs["calibration_s"] > 0
    capsys.readouterr()
    assert main(grid + ["--labels", "10,30,50", "--dry-run"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("estimated wall time:") and "for 1 cells on 1 worker" in line
    assert "this machine's costs" in line and "approximate for supervised/single" in line  # 30 %: from 10 or 50 %


def test_a_perf_estimate_is_used_only_for_the_device_and_step_settings_it_measured(tmp_path: Path, capsys) -> None:
    """Without cell costs, `--dry-run` falls back on `perf`'s figures: only for the kind of device and the input
    size, backbone and batch they were measured with; otherwise it says unknown and why."""
    assert main(["perf", "--profile", "smoke", "--device", "cpu", "--threads", "1", "--method", "supervised",
                 "--steps", "2", "--reports", str(tmp_path)]) == 0
    grid = ["run", "--profile", "smoke", "--device", "cpu", "--method", "supervised", "--labels", "50", "--workers", "1",
            "--out", str(tmp_path / "out"), "--reports", str(tmp_path), "--dry-run"]
    capsys.readouterr()
    assert main(grid) == 0
    assert "(figures of `perf` at" in capsys.readouterr().out.strip().splitlines()[-1]
    assert main(grid + ["--set", "train.batch_size=4"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("estimated wall time: unknown") and "other batch_size than this grid's" in line
    record = json.loads((tmp_path / "perf.json").read_text())
    (tmp_path / "perf.json").write_text(json.dumps({**record, "device": "cuda"}))
    assert main(grid) == 0
    assert "measured profile smoke on cuda, this grid runs on cpu" in capsys.readouterr().out.strip().splitlines()[-1]


def test_the_shipped_quick_costs_fit_the_readme_grid() -> None:
    """A fresh clone estimates the README's command from `cell_costs_quick.json`: the file must have the quick
    profile's settings and budget (else it is silently not used) and a cost for every cell of that grid. A change
    to the quick profile's data, model or budget fails here until the file is measured again."""
    from benchmark.harness.costs import _budget, _key, cost_settings, load_costs, shipped_costs
    from benchmark.harness.grid import configured, expand_grid

    shipped = json.loads(shipped_costs("quick").read_text())
    cells = configured(expand_grid("all", "5,10,30,50", "synthetic"), "quick", None, None, None)
    configs = [cell.cfg for cell in cells]
    assert shipped["settings"] == json.loads(json.dumps(cost_settings(configs[0])))
    assert shipped["budget"] == _budget(configs[0]) and shipped["calibration_s"] > 0
    assert {_key(c.method, c.mode, c.labels) for c in cells} <= set(shipped["cells"])
    assert load_costs(Path("/nonexistent"), configs[0])[1].startswith("the shipped costs")


def test_costs_measured_at_another_batch_size_are_not_used() -> None:
    """A step's cost per image depends on its batch (its fixed part is shared by fewer images at 16 than at 32),
    and so does the calibration step: the quick costs do not estimate a grid run with another train.batch_size."""
    from benchmark.harness.costs import load_costs
    from benchmark.harness.grid import configured, expand_grid

    cell = configured(expand_grid("fixmatch", "5", "synthetic"), "quick", {"train.batch_size": 32}, None, None)[0]
    assert load_costs(Path("/nonexistent"), cell.cfg) is None


# -- the GPU check (scripts/gpu_check.sh), in its CPU form ---------------------------------------------------
def test_the_gpu_check_runs_on_the_cpu_and_estimates_the_paper_grids(tmp_path: Path, capsys) -> None:
    """What scripts/gpu_check.sh runs without a GPU: the measurement at smoke size, every method's device
    path, and the estimates of Table II and Tables III-IV on Kvasir-v2's official sizes with no folder."""
    code = main(["perf", "--profile", "smoke", "--device", "cpu", "--threads", "1", "--method", "supervised,mics",
                 "--estimate-dataset", "kvasir-v2", "--steps", STEPS, "--reports", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "CUDA path: not checked on the CPU" in out and "fp32 float32" in out
    rec = json.loads((tmp_path / "perf.json").read_text())
    assert set(rec["grids"]) == {"all", "ablations"}
    assert "--dataset kvasir-v2" in rec["grids"]["all"]["command"] and rec["grids"]["ablations"]["cells"] > 0
    assert rec["methods"]["mics/fused"]["device_path"] == {"amp": False, "linear_dtypes": ["float32"]}


def test_the_cuda_path_check_names_what_is_off() -> None:
    from benchmark.commands.perf import cuda_path_problems

    good = {"amp": True, "linear_dtypes": ["bfloat16", "float32"], "host_syncs_per_step": {"train": 0}}
    record = {"methods": {"a/single": {"device_path": good},
                          "b/single": {"device_path": {**good, "linear_dtypes": ["float32"]}},
                          "c/fused": {"device_path": {**good, "host_syncs_per_step": {"finetune": 2.0}}}},
              "loader": {"modes": {"single": {"img_s": 100.0, "consumed_img_s": 400.0}}}}
    problems = cuda_path_problems(record)
    assert len(problems) == 3 and problems[0].startswith("b/single: AMP is on")
    assert "2 host syncs per finetune step" in problems[1] and problems[2].startswith("loader single")


def test_the_augmenter_takes_a_spare_core_only(monkeypatch) -> None:
    """Single mode's RandAugment worker runs when this process's share of the cores has one its torch threads
    leave free: one cell alone on two cores, not one of two cells of a pool on two cores, nor one of torchrun's
    processes on the machine (it would take its CPU time from another process's step)."""
    from benchmark.kit import runtime
    from methods.common import augmenter_fits

    monkeypatch.setattr(runtime, "available_cores", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    cpu = torch.device("cpu")
    try:
        assert augmenter_fits(cpu)
        runtime.share_cores(2)
        assert not augmenter_fits(cpu)
        monkeypatch.setattr(runtime, "available_cores", lambda: 4)
        assert augmenter_fits(cpu)
        runtime.share_cores(1)
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun's processes on this machine share its cores too
        assert not augmenter_fits(cpu)
    finally:
        runtime.share_cores(1)


def test_the_bare_loop_computes_a_loss_on_scores_only() -> None:
    """A method's piecewise pass (tokens through one call, then scores through another): the replay computes
    cross-entropy on the (N, C) scores and gives the tokens the gradient of their mean, computing no loss on
    them, as a plain loop through the same calls would add none."""
    from torch import nn

    from benchmark.harness.bareloop import BareLoop
    from benchmark.harness.timing import CallRecorder

    torch.manual_seed(0)
    tokens, head = nn.Linear(4, 6), nn.Linear(6, 3)
    x = torch.randn(5, 7, 4)
    with CallRecorder() as recorder:
        head(tokens(x).mean(1))
    calls = recorder.calls
    expected = [torch.autograd.grad(tokens(x).mean(), tokens.weight)[0],
                torch.autograd.grad(nn.functional.cross_entropy(head(calls[1].args[0]), torch.zeros(5, dtype=torch.long)),
                                    head.weight)[0]]
    BareLoop(calls, lr=0.1, amp=False, device=torch.device("cpu")).step()
    for module, want in zip((tokens, head), expected):
        assert torch.allclose(module.weight.grad, want, atol=1e-7)


def test_a_model_call_through_distribute_is_one_module_call_the_bare_loop_replays() -> None:
    """`ctx.distribute(model, "forward_loss")` is a module call in one process as under torchrun: the bare loop
    replays the method's whole forward pass, its loss arithmetic outside any submodule included, as a plain
    loop calling that model would run it."""
    from torch import nn

    from benchmark.harness.bareloop import BareLoop
    from benchmark.harness.timing import CallRecorder
    from benchmark.kit.distributed import distribute

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(4, 3)

        def forward_loss(self, x: torch.Tensor) -> dict:
            return {"loss": self.net(x).logsumexp(1).mean()}

    torch.manual_seed(0)
    model, x = Model(), torch.randn(5, 4)
    with CallRecorder() as recorder:
        out = distribute(model, "forward_loss")(x)
    assert len(recorder.calls) == 1 and recorder.calls[0].grad
    assert torch.equal(out["loss"], model.forward_loss(x)["loss"])
    before = model.net.weight.detach().clone()
    BareLoop(recorder.calls, lr=0.1, amp=False, device=torch.device("cpu")).step()
    assert not torch.equal(before, model.net.weight)
