"""MICS: each loss on hand-made tensors, the dictionary, pre-training on `synthetic`, a full run."""
import json
import math

import numpy as np
import pytest
import torch

from benchmark.cli import main
from benchmark.harness.config import build_config
from benchmark.kit.contract import RunContext
from benchmark.kit.data import load_dataset, make_split
from benchmark.kit.errors import ConfigError
from benchmark.kit.models import create_backbone
from methods.mics.dictionary import shift_dictionary
from methods.mics.losses import consistency_targets, ds_combine, evidential_loss, info_nce, opinion
from methods.mics.method import PRESETS, PairedBatches, pretrain
from methods.mics.pretraining import SynergisticPretrainer
from methods.registry import get_method, list_methods


def test_consistency_targets_mix_momentum_softmax_and_identity():
    sim = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 0.5]])  # 2 pairs, 1 queue entry
    hard = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    assert torch.allclose(consistency_targets(sim, 0.0), hard)
    assert torch.allclose(consistency_targets(sim, 1.0), sim.softmax(1))
    mixed = consistency_targets(sim, 0.4)
    assert torch.allclose(mixed, 0.4 * sim.softmax(1) + 0.6 * hard)
    assert torch.allclose(mixed.sum(1), torch.ones(2))


def _pretrainer(pcfg_updates=None):
    cfg = build_config("smoke", "mics", "fused", "synthetic", 50, 0)
    pcfg = cfg.method.pretrain.model_copy(update=pcfg_updates or {})
    torch.manual_seed(0)
    enc = [create_backbone(cfg.model, num_classes=0) for _ in range(2)]
    return SynergisticPretrainer(enc[0], enc[1], pcfg), cfg


def test_masking_keeps_exactly_a_quarter_of_the_patches():
    model, _ = _pretrainer()
    ids_keep, ids_restore, mask = model.random_masking(5, 16, 0.75, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert ids_keep.shape == (5, 4)
    assert (mask.sum(1) == 12).all()
    kept = torch.zeros(5, 16).scatter_(1, ids_keep, 1.0)
    assert torch.equal(kept, 1 - mask)  # the kept patches are exactly the unmasked ones
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model.unpatchify(model.patchify(x)), x)


def test_info_nce_is_minimal_for_matching_pairs():
    z = torch.eye(4) * 5
    matched = info_nce(z, z, temp=0.07)
    assert matched < 1e-3
    assert info_nce(z, z[[1, 2, 3, 0]], temp=0.07) > 10
    assert matched < info_nce(z, z + 0.5 * torch.randn(4, 4, generator=torch.Generator().manual_seed(0)), temp=0.07)


def test_dempster_shafer_combination_of_two_opinions_by_hand():
    # Opinion 1: evidence (2, 0) -> S=4, b=(.5, 0), u=.5. Opinion 2: evidence (0, 2) -> b=(0, .5), u=.5.
    # Conflict C = .5 * .5 = .25; b = (b1 b2 + b1 u2 + b2 u1) / (1 - C) = (1/3, 1/3); u = .25 / .75 = 1/3.
    a1, a2 = torch.tensor([[3.0, 1.0]]), torch.tensor([[1.0, 3.0]])
    b, u = opinion(ds_combine(a1, a2))
    assert torch.allclose(b, torch.tensor([[1 / 3, 1 / 3]])) and torch.allclose(u, torch.tensor([[1 / 3]]))
    # Agreement: evidence (2, 0) twice -> b1=b2=(.5, 0), no conflict: b=(.25+.25+.25, 0), u=.25.
    b, u = opinion(ds_combine(a1, a1))
    assert torch.allclose(b, torch.tensor([[0.75, 0.0]])) and torch.allclose(u, torch.tensor([[0.25]]))
    rand = [torch.rand(6, 5, generator=torch.Generator().manual_seed(s)) * 4 + 1 for s in (1, 2)]
    b, u = opinion(ds_combine(*rand))
    assert torch.allclose(b.sum(1, keepdim=True) + u, torch.ones(6, 1))


def test_evidential_loss_prefers_evidence_for_the_true_class():
    y = torch.tensor([0])
    right, wrong = torch.tensor([[11.0, 1.0, 1.0]]), torch.tensor([[1.0, 11.0, 1.0]])
    assert evidential_loss(right, y, 1.0) < evidential_loss(wrong, y, 1.0)
    # The KL term ignores the true class's evidence: with only true-class evidence it is zero.
    assert torch.isclose(evidential_loss(right, y, 1.0), evidential_loss(right, y, 0.0))
    expected = torch.digamma(torch.tensor(13.0)) - torch.digamma(torch.tensor(11.0))
    assert torch.isclose(evidential_loss(right, y, 0.0), expected)


def test_shift_dictionary_shape_and_sample_means():
    rng = np.random.default_rng(0)
    centres = np.array([[10.0, 0, 0, 0], [0, 10.0, 0, 0], [0, 0, 10.0, 0]])
    feats = np.concatenate([c + rng.normal(size=(n, 4)) for c, n in zip(centres, (200, 200, 3))])  # one tiny cluster
    shifts, means = shift_dictionary(feats, clusters=3, samples=4000, seed=0)
    assert shifts.shape == (3, 4000, 4) and means.shape == (3, 4)
    order = means.argmax(1).argsort()
    assert torch.allclose(shifts.mean(1)[order], means[order], atol=0.1)
    assert torch.allclose(means[order][:2], torch.tensor(centres[:2], dtype=torch.float32), atol=0.3)
    assert torch.isfinite(shifts).all()


@pytest.fixture(scope="module")
def smoke_split():
    cfg = build_config("smoke", "mics", "fused", "synthetic", 50, 0)
    raw, cache = load_dataset(cfg.data)
    return make_split(raw, cache, cfg.data, 50, 0)


def test_pretraining_losses_fall_on_synthetic(smoke_split):
    model, _ = _pretrainer()
    wli, nbi = smoke_split.train_pairs
    batches = PairedBatches(wli, nbi, None, 16, 0, torch.device("cpu"), salt=0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for it in range(40):
        out = model.forward_loss(*batches(it), alpha=0.4, generator=torch.Generator().manual_seed(it))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in out.items()})
    for term in ("l_dis", "l_res", "l_a", "loss"):
        first = np.mean([h[term] for h in history[:5]])
        last = np.mean([h[term] for h in history[-5:]])
        assert last < first, f"{term}: {first:.3f} -> {last:.3f}"


def test_adversarial_term_trains_each_side_on_its_own_objective():
    cfg = build_config("smoke", "mics", "fused", "synthetic", 50, 0)
    pcfg = cfg.method.pretrain.model_copy(update={"a_adv": 0.1, "a_dis": 0.0, "a_a": 0.0})
    enc = [create_backbone(cfg.model, num_classes=0) for _ in range(2)]
    model = SynergisticPretrainer(enc[0], enc[1], pcfg, create_backbone(cfg.model, num_classes=1))
    x = torch.randn(4, 3, 32, 32)
    out = model.forward_loss(x, x, 0.4, torch.Generator().manual_seed(0))
    gen_grad = torch.autograd.grad(out["l_adv"], list(model.discriminator.parameters()), allow_unused=True)
    assert all(g is None for g in gen_grad)  # the generator term leaves the discriminator alone
    disc_grad = torch.autograd.grad(out["l_disc"], list(model.decoder.parameters()), allow_unused=True)
    assert all(g is None for g in disc_grad)  # the discriminator term leaves the decoder alone


def test_pretraining_is_cached_and_label_free(smoke_split, tmp_path):
    cfg = build_config("smoke", "mics", "fused", "synthetic", 50, 0)
    ctx = RunContext(device=torch.device("cpu"), seed=0, run_dir=tmp_path / "run", cache_dir=tmp_path / "cache")
    path = pretrain(smoke_split, cfg, ctx)
    stamp = path.stat().st_mtime_ns
    raw, cache = load_dataset(cfg.data)
    other_ratio = make_split(raw, cache, cfg.data, 10, 0)
    assert pretrain(other_ratio, cfg, ctx) == path and path.stat().st_mtime_ns == stamp
    state = torch.load(path, weights_only=True)
    dim = state["encoders"]["wli"]["cls_token"].shape[-1]
    assert state["dictionary"]["wli"].shape == (smoke_split.num_classes, 8, dim)
    vanilla = build_config("smoke", "mics_t3_vanilla", "fused", "synthetic", 50, 0)
    assert pretrain(smoke_split, vanilla, ctx) != path


def test_presets_are_ablations_applied_onto_the_method_config():
    ablations = {s.name for s in list_methods("ablation") if s.family == "mics"}
    assert ablations == set(PRESETS) and get_method("mics").group == "table2"
    cfg = build_config("smoke", "mics_t4_wli", "fused", "synthetic", 50, 0)
    assert cfg.method.finetune.nbi is False and cfg.method.pretrain.a_res > 0
    bad = build_config("smoke", "mics", "fused", "synthetic", 50, 0)
    bad.method.finetune.nbi = False
    with pytest.raises(ConfigError, match="nbi"):
        get_method("mics").train(None, bad, None)


def test_full_mics_run_writes_a_valid_record(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever the CLI writes beside its records stays in tmp_path
    assert main(["run", "--method", "mics", "--labels", "50", "--profile", "smoke", "--device", "cpu",
                 "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "runs/synthetic/mics/fused/labels50/seed0/result.json").read_text())
    assert record["method"] == "mics" and record["mode"] == "fused" and record["labels"] == 50
    assert 0 <= record["test_top1"] <= 100 and math.isfinite(record["val_top1_best"])
    assert record["info"]["head"] == "tmc" and record["info"]["pretrain"]["iterations"] > 0
    assert record["n_unlabeled"] == 144 and record["n_labeled"] == 72  # the labeled pairs are unlabeled ones too
