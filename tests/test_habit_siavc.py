"""HABIT and SIAVC: both train and write records in both modes, resume exactly, and each of their
modules (MRNet, RFC, CMH; SAB, CAM) acts as its paper says."""
import json

import numpy as np
import pytest
import torch

from benchmark.cli import main
from benchmark.harness.config import build_config
from benchmark.kit.schema import ModelConfig
from methods.habit.cmh import ConsistencyAwareMomentumHeredity
from methods.habit.mrnet import MRNet, local_attention_mask
from methods.habit.rfc import DistributionAlignment, compensate_features
from methods.siavc.cam import cross_set_mix
from methods.siavc.sab import SuperAugmentationBlock, otsu_thresholds


def _smoke_model_cfg() -> ModelConfig:
    return build_config("smoke", "habit", "single", "synthetic", 50, 0).model


@pytest.mark.parametrize("method", ["habit", "siavc"])
def test_smoke_runs_write_a_record_per_mode(tmp_path, method):
    argv = ["run", "--method", method, "--labels", "50", "--modes", "single,multi", "--profile", "smoke",
            "--device", "cpu", "--out", str(tmp_path)]
    assert main(argv) == 0
    for mode in ("single", "multi"):
        folder = tmp_path / "runs" / "synthetic" / method / mode / "labels50" / "seed0"
        record = json.loads((folder / "result.json").read_text())
        assert record["method"] == method and record["mode"] == mode and record["iterations"] == 6
        assert 0.0 <= record["test_top1"] <= 100.0
    assert method in (tmp_path / "results.csv").read_text()


@pytest.mark.parametrize("method", ["habit", "siavc"])
def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch, method):
    """Teacher, alignment queue, loss histories and thresholds all come back from the checkpoint."""
    from benchmark.kit.contract import RunContext
    from benchmark.kit.data import load_dataset, make_split
    from methods import get_method
    from methods.common import UnlabeledBatches

    cfg = build_config("smoke", method, "multi", "synthetic", 50, 0)
    raw, cache = load_dataset(cfg.data)
    split = make_split(raw, cache, cfg.data, 50, 0)

    def run(folder):
        torch.manual_seed(0)
        ctx = RunContext(device=torch.device("cpu"), seed=0, run_dir=folder, cache_dir=tmp_path)
        return get_method(method).train(split, cfg, ctx)

    whole = run(tmp_path / "whole")
    original = UnlabeledBatches.__call__

    def crash_at_4(self, it):
        if it == 4:  # after the checkpoint of step 3
            raise KeyboardInterrupt
        return original(self, it)

    monkeypatch.setattr(UnlabeledBatches, "__call__", crash_at_4)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed")
    monkeypatch.setattr(UnlabeledBatches, "__call__", original)
    resumed = run(tmp_path / "resumed")
    a, b = whole.last.state_dict(), resumed.last.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_siavc_made_ahead_on_a_spare_core_gives_the_same_run(tmp_path, monkeypatch):
    """With a core to spare, step it + 1's batches and super-augmentation draws are made on a thread during step
    it: the run is the one that makes them in line, and nothing is left in the making when it returns."""
    from benchmark.kit import ahead
    from benchmark.kit.contract import RunContext
    from benchmark.kit.data import load_dataset, make_split
    from methods import get_method
    from methods.siavc import sab
    from methods.siavc import train as siavc_train

    cfg = build_config("smoke", "siavc", "multi", "synthetic", 50, 0)
    raw, cache = load_dataset(cfg.data)
    split = make_split(raw, cache, cfg.data, 50, 0)
    made, draws = [], []

    class Watched(sab.Draws):
        def __call__(self, it):
            made.append(self.ahead)
            draws.append(self)
            return super().__call__(it)

    monkeypatch.setattr(siavc_train, "Draws", Watched)
    weights = []
    for spare in (0, 1):
        monkeypatch.setattr(ahead, "spare_cores", lambda: spare)
        torch.manual_seed(0)
        ctx = RunContext(device=torch.device("cpu"), seed=0, run_dir=tmp_path / str(spare), cache_dir=tmp_path)
        weights.append(get_method("siavc").train(split, cfg, ctx).last.state_dict())
        assert all(d._next is None or d._next[1].done() for d in draws)
    assert made == [False] * 6 + [True] * 6
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


# ---- HABIT ------------------------------------------------------------------------------------

def test_mrnet_convolution_path_is_local_and_mit_exchanges_features():
    mask = local_attention_mask((4, 4), prefix_tokens=1, window=3)
    assert mask[0].all()  # the class token pools every patch
    assert mask[1 + 5, 1 + 0] and not mask[1 + 0, 1 + 15]  # (1,1) sees (0,0); (0,0) does not see (3,3)

    torch.manual_seed(0)
    net = MRNet(_smoke_model_cfg(), num_classes=6, window=3).eval()
    x = torch.randn(2, 3, 32, 32)
    before = net(x)
    with torch.no_grad():  # move only the permutator path
        for p in net.perm_path.blocks.parameters():
            p.add_(0.5 * torch.randn_like(p))
    moved = net(x)
    assert torch.equal(before.logits[0], moved.logits[0])  # MIT starts closed: the paths are independent
    with torch.no_grad():
        net.mit[0].to_conv.weight.normal_(0, 0.1)  # MIT opens: the conv path now reads the permutator's tokens
    opened = net(x)
    assert not torch.allclose(opened.logits[0], before.logits[0])


def test_rfc_compensation_balances_classes_and_alignment_recalibrates():
    g = torch.Generator().manual_seed(0)
    feats = torch.cat([torch.randn(5, 4) + 10, torch.randn(2, 4) - 10, torch.randn(1, 4)])
    labels = torch.tensor([0] * 5 + [1] * 2 + [2])
    drawn, drawn_labels = compensate_features(feats, labels, num_classes=3, per_class=8, generator=g)
    counts = torch.bincount(torch.cat([labels, drawn_labels]), minlength=3)
    assert counts.tolist() == [8, 8, 1]  # the minority class is topped up most; a single sample has no covariance
    assert (drawn[drawn_labels == 1].mean(0) < -5).all()  # draws stay at their class

    align = DistributionAlignment(queue=32)
    biased = torch.tensor([[0.7, 0.2, 0.1]]).repeat(8, 1)
    assert torch.allclose(align(biased), torch.full((8, 3), 1 / 3))  # a persistent bias is divided out


def test_cmh_momentum_falls_with_inconsistency_and_student_teacher_drift():
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    teacher = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4)).requires_grad_(False)
    teacher.load_state_dict(student.state_dict())
    cmh = ConsistencyAwareMomentumHeredity(student, teacher, momentum=0.99, scale=0.1)
    consistent, inconsistent = cmh.coefficient(0.0), cmh.coefficient(5.0)
    assert 0.99 * (1 - 0.1 * 0.99) < inconsistent < consistent < 0.99
    with torch.no_grad():
        student[1].weight.add_(3.0)
    assert cmh.coefficient(0.0) < consistent
    cmh.consistency = 5.0
    cmh.update()
    assert cmh.momentum == pytest.approx(cmh.base * (1 - 0.1 * cmh.base * torch.sigmoid(torch.tensor(6.0)).item()
                                                     * torch.sigmoid(torch.tensor(5.0)).item()), rel=1e-2)
    assert torch.allclose(teacher[1].weight, torch.full((4,), 1 + 3 * (1 - cmh.momentum)))


# ---- SIAVC ------------------------------------------------------------------------------------

def test_sab_reaugments_samples_whose_loss_fell_into_the_low_class_of_their_history():
    values = torch.tensor([[2.0, 2.1, 1.9, 0.2], [0.2, 0.3, 0.1, 2.0], [1.0, 1.0, 1.0, 1.0]])
    thresholds, has_split = otsu_thresholds(values, torch.ones_like(values, dtype=torch.bool))
    assert has_split.tolist() == [True, True, False]
    assert thresholds[:2].tolist() == pytest.approx([0.2, 0.3])

    sab = SuperAugmentationBlock(3, history=8, mask_prob=0.5, noise_std=10.0, patch=8, device=torch.device("cpu"))
    idx = torch.arange(3)
    for _ in range(3):
        sab.record(idx, torch.tensor([2.0, 0.2, 1.0]))
    assert sab.select(idx).tolist() == [False, False, False]  # flat histories: nothing to split
    sab.record(idx, torch.tensor([0.2, 2.0, 1.0]))  # sample 0 is now well learned, sample 1 got worse
    selected = sab.select(idx)
    assert selected.tolist() == [True, False, False]

    x = torch.zeros(3, 3, 32, 32)
    out = sab.augment(x, selected, sab.draw(x.shape, torch.Generator().manual_seed(0), x.device))
    assert torch.equal(out[1:], x[1:]) and not torch.equal(out[0], x[0])


def test_cam_mixes_labeled_and_confident_unlabeled_into_the_unlabeled_batch():
    labeled, labels = torch.ones(2, 3, 4, 4), torch.tensor([0, 1])
    unlabeled = torch.zeros(5, 3, 4, 4)
    probs = torch.tensor([[0.95, 0.05], [0.6, 0.4], [0.5, 0.5], [0.3, 0.7], [0.2, 0.8]])
    batch = cross_set_mix(labeled, labels, unlabeled, probs, confidence=0.9, alpha=1.0, rng=np.random.default_rng(0))
    assert batch.images.shape == unlabeled.shape and torch.allclose(batch.targets.sum(1), torch.ones(5))
    assert torch.allclose(batch.ratios.sum(1), torch.ones(5))
    pool_share = batch.ratios[:, 0]
    # The pool holds the two labeled images (all ones) and the one confident unlabeled image (all
    # zeros, pseudo-label 0); the 0.6-confident one stays out. A mixed image's mean tells its pool image.
    from_labeled = torch.isclose(batch.images.mean(dim=(1, 2, 3)), pool_share)
    from_unlabeled = torch.isclose(batch.images.mean(dim=(1, 2, 3)), torch.tensor(0.0))
    assert (from_labeled | from_unlabeled).all()
    one_hot_part = batch.targets - (1 - pool_share)[:, None] * probs  # = pool_share * one-hot label
    assert torch.allclose(one_hot_part.max(1).values, pool_share, atol=1e-6)
    assert (one_hot_part[from_unlabeled & ~from_labeled].argmax(1) == 0).all()
