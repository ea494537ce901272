"""The paper path on a GPU, checked on the CPU: resume on any device, weights that fit or fail, the weights'
own normalisation, AMP in every method family, a dry run that checks and counts, every listed key settable,
no host read per step, and a cell's whole time."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmark.contract import RunContext
from benchmark.training import TrainingLoop


# -- 1: resume ------------------------------------------------------------------------------------------
class _Linear(nn.Module):
    def __init__(self, classes: int = 2):
        super().__init__()
        self.fc = nn.Linear(3, classes)

    def predict(self, batch):
        return self.fc(batch["wli"].mean(dim=(2, 3)))

    def embed(self, batch):
        return batch["wli"].mean(dim=(2, 3))


def _noisy_step(model):
    def step(it):
        x = torch.randn(8, 3, 2, 2)  # the global random state: it must come back from the checkpoint
        return {"loss": nn.functional.cross_entropy(model.predict({"wli": x}), (x.mean(dim=(1, 2, 3)) > 0).long())}
    return step


def test_a_checkpoint_is_read_on_the_cpu_whatever_the_run_device(tmp_path):
    """The run's device here is `meta`: a checkpoint mapped there, as to CUDA, cannot give back the random
    state (`torch.set_rng_state` takes a CPU tensor only), which is why every CUDA resume failed."""
    train = {"iterations": 6, "eval_every": 3, "lr": 0.1, "optimizer": "sgd"}
    torch.manual_seed(0)
    model = _Linear()
    extra = {"counts": torch.arange(3)}
    ctx = RunContext(device=torch.device("cpu"), seed=0, run_dir=tmp_path, cache_dir=tmp_path)
    steps = _noisy_step(model)

    def stop_at_4(it):
        if it == 4:
            raise KeyboardInterrupt
        return steps(it)

    with pytest.raises(KeyboardInterrupt):
        TrainingLoop(model, train, ctx, None, extra_state=lambda: extra).run(stop_at_4)
    saved = torch.load(tmp_path / "train_checkpoint.pt", weights_only=False)

    loaded = {}
    meta = RunContext(device=torch.device("meta"), seed=0, run_dir=tmp_path, cache_dir=tmp_path)
    torch.manual_seed(99)
    again = _Linear()
    loop = TrainingLoop(again, train, meta, None, extra_state=lambda: extra, load_extra_state=loaded.update)
    loop._resume()
    assert loop.start == 3 and torch.equal(torch.get_rng_state(), saved["rng"]["torch"])
    assert torch.equal(again.fc.weight, saved["model"]["fc.weight"])
    assert loaded["counts"].device.type == "meta"  # a method's own tensors go to the run's device
