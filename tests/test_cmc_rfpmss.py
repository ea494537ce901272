"""CMC and RFPMSS: their losses on hand-computed values, Multi-SK's marginals and a case worked by hand,
the gradient of the consistency loss, both-modality prediction, the presets, one smoke cell of each."""
import json
import math

import pytest
import torch

from benchmark.cli import main
from benchmark.harness.config import build_config
from benchmark.kit.errors import ConfigError
from benchmark.kit.models import create_backbone
from methods.cmc import PRESETS as CMC_PRESETS
from methods.cmc import stage_iterations as cmc_stages
from methods.cmc.losses import cac_loss, csc_loss, dice_matrix
from methods.cmc.model import CMCClassifier
from methods.registry import get_method, list_methods
from methods.rfpmss import PRESETS as RFPMSS_PRESETS
from methods.rfpmss import stage_iterations as rfpmss_stages
from methods.rfpmss.losses import multi_sinkhorn
from methods.rfpmss.model import AnchorSpaces, RFPMSSClassifier


def test_csc_loss_on_two_tiny_feature_maps_by_hand():
    # One sample, 2 positions x 2 channels. Channel 0: (1, 0) vs (1, 0), cos 1. Channel 1: (0, 1) vs
    # (1, 1), cos 1/sqrt(2). Loss = mean(1 - cos) = (0 + 1 - 1/sqrt(2)) / 2.
    f_a = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (N=1, T=2, C=2)
    f_b = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])
    assert torch.isclose(csc_loss(f_a, f_b), torch.tensor((1 - 1 / math.sqrt(2)) / 2))
    assert torch.isclose(csc_loss(f_a, 3 * f_a), torch.tensor(0.0), atol=1e-6)  # channel scale does not matter
    assert torch.isclose(csc_loss(f_a, -f_a), torch.tensor(2.0))  # opposite channels: the maximum


def test_cac_dice_similarity_and_its_contrast_by_hand():
    p = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # Dice(p0, q0) = 2 * 0.5 / (0.5 + 1) = 2/3; Dice(p1, q0) = 2 / 2 = 1; Dice(p1, q1) = 0.
    assert torch.allclose(dice_matrix(p, q), torch.tensor([[2 / 3, 2 / 3], [1.0, 0.0]]), atol=1e-5)
    terms = cac_loss(p, q, temp=1.0, contrast_weight=1.0)
    assert torch.isclose(terms["agree"], torch.tensor((1 / 3 + 1) / 2), atol=1e-5)
    # Rows: -log softmax of (2/3, 2/3)[0] = log 2 and of (1, 0)[1] = log(1 + e); columns alike by symmetry of this case.
    rows = (math.log(2) + math.log(1 + math.e)) / 2
    cols = (-math.log(math.exp(2 / 3) / (math.exp(2 / 3) + math.exp(1))) - math.log(1 / (1 + math.exp(2 / 3)))) / 2
    assert torch.isclose(terms["contrast"], torch.tensor((rows + cols) / 2), atol=1e-5)
    assert "contrast" not in cac_loss(p, q, temp=1.0, contrast_weight=0.0)


def test_multi_sinkhorn_on_a_4x4_case_worked_by_hand():
    # Samples 0, 1 score 1 with anchors 0, 1 and 0 with anchors 2, 3; samples 2, 3 the other way; K' = 2.
    # By symmetry the fixed point is P'_k = scale_k * exp(X'_k / eps) with one ratio r between matching and
    # other cells; the quotas give a_k = sigma(s_k / eps + log r) / 2 with s_k = 1 (channels 0, 1) or mu,
    # and sum_k a_k = 1 forces log r = -(1 + mu) / (2 eps), so P(match) = sigma((1 - mu) / (2 eps)).
    x = torch.tensor([[1.0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])
    eps, mu = 0.5, 0.5
    match = 1 / (1 + math.exp(-(1 - mu) / (2 * eps)))  # 0.6225
    expected = torch.where(x > 0, torch.tensor(match), torch.tensor(1 - match))
    assert torch.allclose(multi_sinkhorn(x, 2, mu, eps, 200), expected, atol=1e-4)
    # Every sample prefers anchors 0 and 1 alike: greedy top-2 would give each (1, 1, 0, 0) and anchors 2
    # and 3 to nobody; the quota of N K'/K = 2 samples per anchor spreads everything to 1/2.
    same = torch.tensor([[4.0, 3, 2, 1]] * 4)
    assert torch.allclose(multi_sinkhorn(same, 2, 0.25, 0.05, 10), torch.full((4, 4), 0.5), atol=1e-5)


def test_multi_sinkhorn_marginals_within_tolerance():
    """Every sample K' anchors, every anchor N K'/K samples: at the quick profile's sizes and the
    configured epsilon and iterations, rows within 2% of K' and columns within 0.1% of N K'/K."""
    cfg = build_config("quick", "rfpmss", "fused", "synthetic", 50, 0).method.anchors
    n, k, selected = 64 + cfg.bank, cfg.count, cfg.selected
    gen = torch.Generator().manual_seed(0)
    feats, anchors = torch.randn(n, 64, generator=gen), torch.randn(k, 64, generator=gen)
    scores = (torch.nn.functional.normalize(feats, dim=1) @ torch.nn.functional.normalize(anchors, dim=1).t() * 5).clamp(-1, 1)
    plan = multi_sinkhorn(scores, selected, cfg.damping, cfg.epsilon, cfg.sinkhorn_iterations)
    assert plan.min() >= 0
    assert (plan.sum(1) - selected).abs().max() <= 0.02 * selected
    assert (plan.sum(0) - n * selected / k).abs().max() <= 1e-3 * n * selected / k
    # The assignment follows the similarities: each sample's most similar anchor is among its K' heaviest.
    heaviest = plan.topk(selected, dim=1).indices
    assert (heaviest == scores.argmax(1, keepdim=True)).any(1).float().mean() > 0.9


@pytest.fixture(scope="module")
def smoke_cfg():
    return build_config("smoke", "rfpmss", "fused", "synthetic", 50, 0)


@pytest.mark.parametrize("cross_modal", [True, False])
def test_consistency_loss_gradient_reaches_every_anchor(smoke_cfg, cross_modal):
    m = smoke_cfg.method
    torch.manual_seed(0)
    model = RFPMSSClassifier(create_backbone(smoke_cfg.model, 0), create_backbone(smoke_cfg.model, 0), 6,
                             m.joint_dim, m.projection)
    spaces = AnchorSpaces(model.projections, 32, m.joint_dim, m.anchors,
                          m.sspc.model_copy(update={"cross_modal": cross_modal}),
                          m.nce.model_copy(update={"weight": 0.0}), bank=16)
    tokens = [torch.randn(12, 17, 32) for _ in range(2)]
    out = spaces.forward_loss(*tokens, tokens[0][:, 0], tokens[1][:, 0])
    out["loss"].backward()
    for anchors in (*spaces.anchors_in.values(), *spaces.anchors_joint.values()):
        assert anchors.grad is not None and anchors.grad.abs().sum() > 0
    assert all(p.grad is not None for p in spaces.projections.parameters())
    assert int(spaces.banks["joint_wli"].filled) == 12  # the batch went into the banks after the loss


def test_both_methods_predict_from_both_modalities():
    cfg = build_config("smoke", "cmc", "fused", "synthetic", 50, 0)
    rcfg = build_config("smoke", "rfpmss", "fused", "synthetic", 50, 0).method
    torch.manual_seed(0)
    models = [CMCClassifier(create_backbone(cfg.model, 0), create_backbone(cfg.model, 0), 6, cfg.method),
              RFPMSSClassifier(create_backbone(cfg.model, 0), create_backbone(cfg.model, 0), 6,
                               rcfg.joint_dim, rcfg.projection)]
    wli, nbi = torch.randn(3, 3, 32, 32), torch.randn(3, 3, 32, 32)
    for model in models:
        model.eval()
        logits = model.predict({"wli": wli, "nbi": nbi})
        assert logits.shape == (3, 6)
        assert not torch.allclose(logits, model.predict({"wli": wli, "nbi": torch.randn(3, 3, 32, 32)}))
        assert not torch.allclose(logits, model.predict({"wli": torch.randn(3, 3, 32, 32), "nbi": nbi}))


def test_presets_are_registered_ablations_and_stages_fit_the_budget():
    for family, presets in (("cmc", CMC_PRESETS), ("rfpmss", RFPMSS_PRESETS)):
        assert get_method(family).group == "table2" and get_method(family).modes == ("fused",)
        assert {s.name for s in list_methods("ablation") if s.family == family} == set(presets)
    cfg = build_config("quick", "cmc", "fused", "synthetic", 50, 0, overrides={"train.iterations": 150})
    assert cmc_stages(cfg) == {"warmup": 30, "train": 120}  # 0.2 of 150 iterations, then the rest
    assert build_config("quick", "cmc_no_csc", "fused", "synthetic", 50, 0).method.csc.weight == 0
    assert cmc_stages(build_config("quick", "cmc_no_staging", "fused", "synthetic", 50, 0))["warmup"] == 0
    cfg = build_config("quick", "rfpmss", "fused", "synthetic", 50, 0)
    assert cfg.method.anchors.count == 16
    assert sum(rfpmss_stages(cfg).values()) == cfg.train.iterations
    assert get_method("rfpmss").stage_iterations(cfg, None) == rfpmss_stages(cfg)  # declared at registration
    assert build_config("paper", "rfpmss", "fused", "kvasir", 50, 0).method.anchors.count == 64
    assert rfpmss_stages(build_config("quick", "rfpmss_no_pretrain", "fused", "synthetic", 50, 0))["pretrain"] == 0


def test_schema_refuses_bad_settings_and_a_measured_run_gives_each_stage_its_steps():
    with pytest.raises(ConfigError, match=r"anchors\.selected \(99\) must be at most anchors\.count"):
        build_config("quick", "rfpmss", "fused", "synthetic", 50, 0, overrides={"method.anchors.selected": 99})
    with pytest.raises(ConfigError, match="warmup_share"):
        build_config("quick", "cmc", "fused", "synthetic", 50, 0, overrides={"method.warmup_share": 1.0})
    for name, steps in (("cmc", [4, 4]), ("rfpmss", [4, 4]), ("cmc_no_staging", [0, 4]),
                        ("rfpmss_no_pretrain", [0, 4])):
        spec = get_method(name)
        short = spec.cost.shorten(build_config("quick", name, "fused", "synthetic", 50, 0), 4, 900)
        assert [stage.iterations(short, None) for stage in spec.cost.stages] == steps
        assert spec.stage_iterations(short, None)["train"] == 4 and short.train.eval_every == 4


def test_one_smoke_cell_of_each_writes_a_record(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--method", "cmc,rfpmss", "--labels", "50", "--profile", "smoke", "--device", "cpu",
                 "--out", str(tmp_path)]) == 0
    # smoke: train.iterations 6 -> CMC warm-up round(0.2 * 6) = 1, RFPMSS stage 1 round(0.3 * 6) = 2
    for method, stages in (("cmc", {"warmup": 1, "train": 5}), ("rfpmss", {"pretrain": 2, "train": 4})):
        record = json.loads((tmp_path / f"runs/synthetic/{method}/fused/labels50/seed0/result.json").read_text())
        assert record["method"] == method and record["mode"] == "fused"
        assert record["iterations"] == 6 and 0 <= record["test_top1"] <= 100
        assert record["info"]["stages"] == stages and record["info"]["head"] == "fused"


def test_presets_leave_table2_for_their_own_ablation_table():
    import pandas as pd

    from benchmark.kit.records import COLUMNS, method_columns
    from benchmark.reports.render import to_markdown
    from benchmark.reports.tables import preset_ablation_table, preset_families, table2

    def row(method, top1, labels=50.0):
        r = dict.fromkeys(COLUMNS)
        r.update(dataset="synthetic", method=method, mode="fused", labels=labels, seed=0, test_top1=top1,
                 ci95_low=top1 - 5, ci95_high=top1 + 5, profile="quick", nbi="spectral",
                 **method_columns(get_method(method).describe()))
        return r

    results = pd.DataFrame([row("mics", 60.0), row("cmc", 55.0), row("rfpmss", 50.0), row("cmc", 52.0, 5.0),
                            row("cmc_no_csc", 53.0), row("rfpmss_no_nce", 45.0)])
    fused = [rows for heading, rows, _ in table2(results).blocks if heading.startswith("fused")][0]
    assert fused == [("mics", "fused"), ("cmc", "fused"), ("rfpmss", "fused")]
    with_mics_preset = pd.concat([results, pd.DataFrame([row("mics_t3_vanilla", 40.0)])])
    assert preset_families(with_mics_preset) == ["cmc", "rfpmss"]  # MICS's presets are Tables III/IV
    t = preset_ablation_table(results, "cmc")
    assert [r for _, rows, _ in t.blocks for r in rows] == [("cmc", "fused"), ("cmc_no_csc", "fused")]
    assert list(t.mean.columns) == [("synthetic", 50.0)]  # only the ratios the presets ran
    text = to_markdown(t)
    assert "**55.00**" in text and "without the channel-wise semantic consistency loss" in text
