"""One run on several processes (docs/scale-out.md, "One run on several GPUs"): `torchrun` starts this
file as 2 processes with the gloo backend on the CPU. They run a few MICS pre-training steps, a few
FixMatch steps and a whole MICS cell through the runner; each saves what it holds, and the tests
compare: the processes' weights are bitwise identical and moved from their initialisation, their
shares of a batch make up the single-process batch, and FixMatch's weights match a single-process
run's up to rounding (the gradient of the global batch is the average of the shares' gradients)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORLD = 2
SEED = 0
MICS_CELL = ("synthetic", "mics", "fused", 50.0, SEED)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> tuple[Path, str]:
    """One torchrun launch for every test here (each process spends seconds importing torch, timm and
    semilearn) -> (the folder the processes wrote into, the end of their output, for failures)."""
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(WORLD),
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), __file__, str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    return out, f"exit code {proc.returncode}:\n" + (proc.stdout + proc.stderr)[-6000:]


def _load(launched: tuple[Path, str], name: str):
    out, log = launched
    assert (out / name).exists(), f"the processes wrote no {name}; {log}"
    return torch.load(out / name) if name.endswith(".pt") else json.loads((out / name).read_text())


def _assert_identical_and_trained(states: list[dict]) -> None:
    first = states[0]
    for other in states[1:]:
        assert other["trained"].keys() == first["trained"].keys()
        for key, value in first["trained"].items():
            assert torch.equal(value, other["trained"][key]), f"processes differ in {key}"
    moved = [k for k, v in first["trained"].items() if v.is_floating_point() and not torch.equal(v, first["init"][k])]
    assert len(moved) > len(first["trained"]) // 2, "training left most weights at their initialisation"


def test_mics_pretraining_keeps_the_processes_identical(launched) -> None:
    _assert_identical_and_trained([_load(launched, f"mics-rank{r}.pt") for r in range(WORLD)])


def test_fixmatch_keeps_the_processes_identical_and_matches_one_process(launched) -> None:
    states = [_load(launched, f"fixmatch-rank{r}.pt") for r in range(WORLD)]
    _assert_identical_and_trained(states)
    single = _load(launched, "fixmatch-single.pt")
    for key, value in single["trained"].items():
        # Rounding apart (up to ~1e-7 here); every tensor moved by more than 5e-4.
        assert torch.allclose(value, states[0]["trained"][key], rtol=0, atol=1e-6), key


def test_the_shares_of_a_batch_are_the_single_process_batch(launched) -> None:
    single = _load(launched, "batch-single.pt")
    for r in range(WORLD):
        share = _load(launched, f"batch-rank{r}.pt")
        for name, value in share.items():  # weak and strong views (RandAugment), indices
            assert torch.equal(value, single[name][r::WORLD]), name


def test_a_cell_runs_once_with_one_record(launched) -> None:
    assert _load(launched, "statuses.json") == {"first": ["finished"] * WORLD, "again": ["done"] * WORLD}
    out = launched[0]
    dataset, method, mode, labels, seed = MICS_CELL
    folder = out / "results" / "runs" / dataset / method / mode / f"labels{labels:02g}" / f"seed{seed}"
    record = json.loads((folder / "result.json").read_text())
    assert record["method"] == "mics" and not list(folder.glob("*_checkpoint.pt"))
    assert (out / "results" / "results.csv").exists()


# --- what each process runs -------------------------------------------------------------------------

def _worker(out: Path) -> None:
    import torch.distributed as dist

    from benchmark.harness.cell import run_cell
    from benchmark.harness.config import build_config
    from benchmark.harness.grid import Cell
    from benchmark.kit import distributed
    from benchmark.kit.contract import RunContext
    from benchmark.kit.data import load_dataset, make_split
    from benchmark.kit.models import create_backbone
    from benchmark.kit.records import rebuild_results_csv
    from benchmark.kit.runtime import configure_threads, seed_everything
    from methods.common import UnlabeledBatches
    from methods.mics.method import _run_pretraining
    from methods.usb import USBRun

    cpu = torch.device("cpu")
    configure_threads(1)
    cfg = build_config("smoke", "mics", "fused", "synthetic", 50, SEED)
    raw, cache = load_dataset(cfg.data)
    split = make_split(raw, cache, cfg.data, 50, SEED)
    # FixMatch, the 6 steps of the smoke profile, single mode (RandAugment strong views), with USB's own
    # optimizer for FixMatch (SGD, lr 0.03): AdamW would magnify the rounding differences of gradients
    # that are zero but for rounding (attention's key bias) into steps of order lr, and hide what the
    # comparison with one process shows.
    fix_cfg = build_config("smoke", "fixmatch", "single", "synthetic", 50, SEED)
    fix_cfg.train = fix_cfg.train.model_copy(update={"optimizer": "sgd", "lr": 0.03})

    def fixmatch(folder: Path) -> dict:
        seed_everything(SEED)
        run = USBRun("fixmatch", split, fix_cfg, RunContext(device=cpu, seed=SEED, run_dir=folder, cache_dir=out / "cache"))
        start = {k: v.clone() for k, v in run.model.state_dict().items()}
        run.fit()
        return {"init": start, "trained": run.model.state_dict()}

    def batch() -> dict:
        weak, strong, idx = UnlabeledBatches(split.unlabeled, 8, SEED, cpu, "single")(2)
        return {"weak": weak, "strong": strong, "idx": idx}

    # One process's results first, before the group exists (rank 1 waits for rank 0 to join).
    if os.environ["RANK"] == "0":
        torch.save(batch(), out / "batch-single.pt")
        torch.save(fixmatch(out / "fixmatch-single"), out / "fixmatch-single.pt")

    distributed.init()
    rank = distributed.rank()
    assert distributed.world_size() == WORLD
    torch.save(batch(), out / f"batch-rank{rank}.pt")

    # MICS pre-training, 3 steps of the smoke profile (consistency with its queues, reconstruction, alignment).
    pcfg = cfg.method.pretrain.model_copy(update={"epochs": 0.3})
    torch.manual_seed(SEED)
    init = [create_backbone(cfg.model, num_classes=0).state_dict() for _ in range(2)]  # as _run_pretraining's
    torch.manual_seed(SEED)
    ctx = RunContext(device=cpu, seed=SEED, run_dir=out / "pretrain", cache_dir=out / "cache")
    encoders, stats = _run_pretraining(*split.train_pairs, cfg, pcfg, ctx, out / "pretrain")
    assert stats["iterations"] == 3

    def both(wli: dict, nbi: dict) -> dict:
        return {**{f"wli.{k}": v for k, v in wli.items()}, **{f"nbi.{k}": v for k, v in nbi.items()}}

    torch.save({"init": both(*init), "trained": both(encoders["wli"], encoders["nbi"])}, out / f"mics-rank{rank}.pt")

    # A whole MICS cell through the runner (pre-training cache, dictionary, fine-tuning, record), twice.
    cell = Cell(*MICS_CELL, cfg=cfg)
    first = run_cell(cell, out / "results").status
    again = run_cell(cell, out / "results").status
    statuses = [None] * WORLD
    dist.all_gather_object(statuses, (first, again))
    if distributed.is_main():
        rebuild_results_csv(out / "results")
        (out / "statuses.json").write_text(json.dumps({"first": [s[0] for s in statuses],
                                                       "again": [s[1] for s in statuses]}))

    torch.save(fixmatch(out / "fixmatch-ddp"), out / f"fixmatch-rank{rank}.pt")


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
