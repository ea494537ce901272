"""The shared training loop: exact resume from a checkpoint, NaN stop, best-validation selection, compiled blocks."""
import numpy as np
import pytest
import torch
from torch import nn

from benchmark.kit.contract import RunContext
from benchmark.kit.data.types import PairedArrays
from benchmark.kit.schema import TrainConfig
from benchmark.kit.training import NonFiniteLoss, TrainingLoop

# a whole train section (the loop restates no default): the schema's, with these changes
TRAIN = TrainConfig(iterations=12, eval_every=4, lr=0.05, optimizer="sgd", ema_momentum=0.9, warmup_iterations=2,
                    min_lr=0.0, weight_decay=0.0, eval_batch_size=16)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3, 2)

    def predict(self, batch):
        return self.fc(batch["wli"].mean(dim=(2, 3)))

    def embed(self, batch):
        return batch["wli"].mean(dim=(2, 3))


def _val():
    rng = np.random.default_rng(0)
    return PairedArrays(rng.integers(0, 255, (20, 4, 4, 3), dtype=np.uint8), rng.integers(0, 255, (20, 4, 4, 3), dtype=np.uint8),
                        rng.integers(0, 2, 20), np.arange(20))


def _step(model, crash_at=None):
    def step(it):
        if it == crash_at:
            raise KeyboardInterrupt  # a kill between two checkpoints
        g = torch.Generator().manual_seed(it)
        x = torch.randn(8, 3, 4, 4, generator=g) + torch.rand(1).item()  # global RNG use is restored too
        y = (x.mean(dim=(1, 2, 3)) > 0).long()
        return {"loss": nn.functional.cross_entropy(model.predict({"wli": x}), y)}
    return step


def _ctx(tmp_path):
    return RunContext(device=torch.device("cpu"), seed=0, run_dir=tmp_path, cache_dir=tmp_path)


def test_resume_from_checkpoint_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    torch.manual_seed(1)
    full = Tiny()
    whole = TrainingLoop(full, TRAIN, _ctx(tmp_path / "a"), _val()).run(_step(full))

    torch.manual_seed(1)
    first = Tiny()
    with pytest.raises(KeyboardInterrupt):
        TrainingLoop(first, TRAIN, _ctx(tmp_path / "b"), _val()).run(_step(first, crash_at=10))
    assert (tmp_path / "b" / "train_checkpoint.pt").exists()
    torch.manual_seed(99)  # a new process: different global RNG until the checkpoint restores it
    second = Tiny()
    resumed = TrainingLoop(second, TRAIN, _ctx(tmp_path / "b"), _val()).run(_step(second))

    for a, b in zip(whole.last.state_dict().values(), resumed.last.state_dict().values()):
        assert torch.equal(a, b)
    assert whole.val_top1_best == resumed.val_top1_best


def test_nan_loss_stops_the_run_with_a_clear_error(tmp_path):
    model = Tiny()
    with pytest.raises(NonFiniteLoss, match="iteration 0"):
        TrainingLoop(model, TRAIN, _ctx(tmp_path), _val()).run(lambda it: {"loss": torch.tensor(float("nan"), requires_grad=True)})


def test_best_model_is_the_best_validation_checkpoint(tmp_path):
    model = Tiny()
    loop = TrainingLoop(model, TRAIN, _ctx(tmp_path), _val())
    trained = loop.run(_step(model))
    from benchmark.kit.training import top1

    assert top1(trained.best, _val(), torch.device("cpu")) == pytest.approx(trained.val_top1_best)
    assert trained.val_top1_best >= top1(trained.last, _val(), torch.device("cpu"))


class TinyViT(nn.Module):
    """One timm transformer block over the 16 pixels of a 4x4 image."""

    def __init__(self):
        super().__init__()
        from timm.models.vision_transformer import Block

        torch.manual_seed(0)
        self.embed_pixels, self.block, self.head = nn.Linear(3, 8), Block(8, num_heads=2), nn.Linear(8, 2)

    def embed(self, batch):
        tokens = self.embed_pixels(batch["wli"].flatten(2).transpose(1, 2))  # (N, 16, 8)
        return self.block(tokens).mean(dim=1)

    def predict(self, batch):
        return self.head(self.embed(batch))


def test_runtime_compile_compiles_the_blocks_and_trains_as_eager(tmp_path):
    train = TRAIN.model_copy(update={"iterations": 3, "eval_every": 3})
    eager = TinyViT()
    expected = TrainingLoop(eager, train, _ctx(tmp_path / "eager"), _val()).run(_step(eager))

    compiled = TinyViT()
    ctx = RunContext(device=torch.device("cpu"), seed=0, run_dir=tmp_path / "compiled", cache_dir=tmp_path, compile=True)
    got = TrainingLoop(compiled, train, ctx, _val()).run(_step(compiled))

    assert compiled.block._compiled_call_impl is not None  # the block itself, in place: names unchanged
    assert got.last.state_dict().keys() == expected.last.state_dict().keys()
    for a, b in zip(expected.last.state_dict().values(), got.last.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5)


def test_weight_average_is_torchs_ema_to_the_bit_and_checkpoints_alike():
    """The loop's evaluated weights: what `AveragedModel` with `get_ema_multi_avg_fn` computes, bit for bit, on a
    model with float and integer buffers; its checkpoint entries load into either."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from benchmark.kit.training import WeightAverage

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    ours = WeightAverage(model, 0.9)
    torchs = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for step in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(torch.randn(6, 5))  # moves the BatchNorm statistics and its integer counter
        ours.update()
        torchs.update_parameters(model)
    assert ours.state_dict().keys() == torchs.state_dict().keys()
    for key, value in torchs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    resumed = WeightAverage(model, 0.9)
    resumed.load_state_dict(torchs.state_dict())
    assert resumed.n_averaged == 4 and torch.equal(resumed.module[0].weight, torchs.module[0].weight)


@pytest.mark.parametrize("crash_at", [None, 6])
def test_a_loop_returns_with_nothing_made_ahead_for_it_still_in_the_making(tmp_path, monkeypatch, crash_at):
    """The last step's successor is made ahead on the thread (`benchmark.kit.ahead`); the loop, finished or
    interrupted, returns only once it is made, so nothing of one run runs beside the next."""
    import time

    from benchmark.kit import ahead

    monkeypatch.setattr(ahead, "spare_cores", lambda: 1)
    successor = crash_at + 1 if crash_at is not None else TRAIN.iterations
    made = []

    def make(it: int) -> int:
        time.sleep(0.3 if it == successor else 0.0)
        made.append(it)
        return it

    class Batches(ahead.MadeAhead):
        def make(self, it: int) -> int:
            return make(it)

    batches = Batches(torch.device("cpu"))
    model = Tiny()
    step = _step(model, crash_at)

    def step_with_batches(it):
        assert batches(it) == it
        return step(it)

    loop = TrainingLoop(model, TRAIN, _ctx(tmp_path), _val())
    if crash_at is None:
        loop.run(step_with_batches)
    else:
        with pytest.raises(KeyboardInterrupt):
            loop.run(step_with_batches)
    assert made[-1] == successor
