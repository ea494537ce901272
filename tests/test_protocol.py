"""The shared protocol: one label-free starting point loaded by every method, one budget-scaling rule for
time constants, and the health recorded in every run."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import timm
import torch

from benchmark.cli import main
from benchmark.harness import init_weights
from benchmark.harness.config import build_config
from benchmark.kit import budget, models
from benchmark.kit.config_files import profile_config
from benchmark.kit.errors import ConfigError
from benchmark.kit.files import file_sha256
from benchmark.kit.health import PseudoLabelMonitor, PseudoLabels, collapsed
from benchmark.kit.schema import ModelConfig

TINY = ModelConfig(arch="vit_tiny_patch16_224", init="random", kwargs={"img_size": 32, "patch_size": 8, "embed_dim": 32,
                                                                     "depth": 1, "num_heads": 2, "mlp_ratio": 2.0})


# -- the shipped starting points -------------------------------------------------------------------------
@pytest.mark.parametrize("profile", ["smoke", "quick"])
def test_shipped_weights_match_their_sidecar_and_profile(profile):
    weights = init_weights.shipped_path(profile)
    meta = json.loads(weights.with_suffix(".json").read_text())
    assert meta["sha256"] == file_sha256(weights)
    cfg = profile_config(profile)
    assert meta["architecture"] == models.architecture(cfg.model)
    assert meta["settings"] == cfg.init.model_dump() and meta["labels_used"] == "none"
    assert models.suite_weights_path(cfg.model) == weights


def test_every_method_starts_from_the_shipped_weights():
    cfg = profile_config("smoke").model
    state = torch.load(init_weights.shipped_path("smoke"), weights_only=True)
    a, b = models.create_backbone(cfg, num_classes=6), models.create_backbone(cfg, num_classes=3)
    for key, value in state.items():
        assert torch.equal(a.state_dict()[key], value) and torch.equal(b.state_dict()[key], value), key
    random = models.create_backbone(cfg.model_copy(update={"init": "random"}), num_classes=6)
    assert not torch.equal(random.state_dict()["blocks.0.attn.qkv.weight"], state["blocks.0.attn.qkv.weight"])


def test_suite_weights_of_another_model_are_refused(tmp_path):
    cfg = profile_config("smoke").model
    with pytest.raises(ConfigError, match="no shipped label-free weights"):
        models.create_backbone(cfg.model_copy(update={"kwargs": {**cfg.kwargs, "depth": 2}}), num_classes=6)
    with pytest.raises(ConfigError, match="does not fit"):
        models.create_backbone(cfg.model_copy(update={"kwargs": {**cfg.kwargs, "depth": 2},
                                                      "weights": str(init_weights.shipped_path("smoke"))}),
                               num_classes=6)
    with pytest.raises(ConfigError, match="no such file"):
        models.create_backbone(cfg.model_copy(update={"weights": str(tmp_path / "missing.pt")}), num_classes=6)


def test_imagenet_init_loads_a_local_timm_file(tmp_path):
    source = timm.create_model(TINY.arch, num_classes=1000, **TINY.kwargs)
    path = tmp_path / "tiny_in1k.pth"
    torch.save(source.state_dict(), path)
    model = models.create_backbone(TINY.model_copy(update={"init": "imagenet", "weights": str(path)}), num_classes=6)
    assert torch.equal(model.state_dict()["blocks.0.mlp.fc1.weight"], source.state_dict()["blocks.0.mlp.fc1.weight"])
    assert model.get_classifier().out_features == 6


def test_run_refuses_missing_weights_before_any_cell(tmp_path, capsys):
    code = main(["run", "--profile", "smoke", "--method", "supervised", "--labels", "50", "--out", str(tmp_path),
                 "--set", f"model.weights={tmp_path / 'nothing.pt'}"])
    assert code == 2 and "model.weights" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_building_the_init_reads_no_benchmark_image(tmp_path, monkeypatch):
    import benchmark.kit.data as data
    import benchmark.kit.data.synthetic as synthetic

    def forbidden(*args, **kwargs):
        raise AssertionError("the init build read the benchmark's data")

    monkeypatch.setattr(data, "load_dataset", forbidden)
    monkeypatch.setattr(synthetic, "render_synthetic", forbidden)
    monkeypatch.setattr(np, "load", forbidden)
    settings = profile_config("smoke").init.model_copy(update={"iterations": 2, "batch_size": 4})
    out = init_weights.build(TINY.model_copy(update={"init": "random", "weights": None}), settings, 32,
                             tmp_path / "w.pt", "test", "test", log=lambda _: None)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["sha256"] == file_sha256(out) and meta["labels_used"] == "none"
    medical = {"retina", "microaneurysms", "immunohistochemistry", "cell", "cells3d", "kidney", "skin"}
    assert not medical & set(meta["corpus"]["images"])


def test_simclr_views_pair_up():
    corpus = init_weights.load_corpus()
    g = torch.Generator().manual_seed(0)
    a, b = init_weights.random_views(corpus, 8, 32, g)
    assert a.shape == b.shape == (8, 3, 32, 32) and not torch.equal(a, b)
    z = torch.randn(4, 8)
    assert init_weights.nt_xent(z, z, 0.1) < init_weights.nt_xent(z, torch.randn(4, 8), 0.1)


# -- one budget rule --------------------------------------------------------------------------------------
def test_time_constants_keep_their_share_of_the_run():
    assert budget.scale_momentum(0.999, 204800, 204800) == pytest.approx(0.999)
    assert budget.scale_momentum(0.999, 204800, 20480) == pytest.approx(0.99)  # horizon 1000 -> 100
    assert budget.scale_momentum(0.999, 204800, 100) == 0.0  # a horizon below one iteration
    assert budget.scale_count(5120, 204800, 300) == 8 and budget.scale_count(2048, 204800, 10) == 1
    assert budget.scale_value(0.0, 100, 10) == 0.0 and budget.scale_value(0, 100, 10) == 0


def test_the_runner_scales_every_declared_constant_and_records_it():
    cfg = build_config("quick", "freematch", "single", "synthetic", 5, 0)
    scaled = budget.apply(cfg, {"train": 2048})
    assert scaled.method.ema_p == pytest.approx(1 - 1 / 10)
    assert scaled.train.warmup_iterations == round(5120 * 2048 / 204800)
    assert set(scaled.budget["scaled"]) == {"method.ema_p", "train.warmup_iterations", "train.ema_momentum"}
    assert scaled.train.ema_momentum == pytest.approx(1 - 1 / (100 * 2048 / 450))  # a horizon of 100 of 450
    assert cfg.method.ema_p == 0.999  # the declared config is left as it was
    dash = budget.apply(build_config("quick", "dash", "single", "synthetic", 5, 0), {"train": 2048})
    assert dash.method.num_wu_iter == round(2048 * 2048 / 204800)
    assert dash.method.rho_update_every == round(10240 * 2048 / 204800)  # 20 rho updates at any budget
    with pytest.raises(ConfigError, match="unknown stage"):
        budget.apply(build_config("quick", "mics", "fused", "synthetic", 5, 0), {"train": 10})


# -- health ----------------------------------------------------------------------------------------------
def test_health_counts_the_last_tenth_of_the_run():
    monitor = PseudoLabelMonitor(np.array([0, 1, 2, 0]))
    idx = torch.tensor([0, 1, 2, 3])
    early = PseudoLabels(idx, torch.zeros(4), torch.tensor([1, 1, 1, 1]))
    late = PseudoLabels(idx, torch.tensor([1.0, 1.0, 0.0, 0.5]), torch.eye(3)[torch.tensor([0, 2, 2, 0])])
    for it in range(18):
        monitor.observe(it, 20, early)
    step = monitor.observe(18, 20, late)
    monitor.observe(19, 20, late)
    assert step["mask_rate"] == pytest.approx(2.5 / 4)
    summary = monitor.summary()
    assert summary["unlabeled_mask_rate"] == pytest.approx(2.5 / 4)
    # mask-weighted: sample 0 right (1.0), sample 1 wrong (1.0), sample 3 right (0.5)
    assert summary["pseudo_label_acc"] == pytest.approx(100 * 1.5 / 2.5, abs=0.01)
    # unmasked: samples 0, 2 and 3 right, 1 wrong, in both counted steps
    assert summary["pseudo_label_acc_all"] == pytest.approx(75.0)
    assert PseudoLabelMonitor(np.zeros(2)).summary() == {"unlabeled_mask_rate": None, "pseudo_label_acc": None,
                                                         "pseudo_label_acc_all": None}


def test_collapse_is_more_than_80_percent_in_one_class():
    assert collapsed(np.array([1] * 9 + [0]), 3) and not collapsed(np.array([1] * 8 + [0, 2]), 3)


def test_usb_runs_record_their_mask_and_pseudo_label_accuracy(tmp_path):
    assert main(["run", "--profile", "smoke", "--method", "fixmatch,freematch", "--modes", "multi", "--labels", "50",
                 "--out", str(tmp_path), "--reports", str(tmp_path / "reports"),
                 "--set", "method.p_cutoff=0.0"]) == 0
    for name in ("fixmatch", "freematch"):
        record = json.loads((tmp_path / f"runs/synthetic/{name}/multi/labels50/seed0/result.json").read_text())
        assert 0.0 <= record["unlabeled_mask_rate"] <= 1.0 and math.isfinite(record["pseudo_label_acc"])
        assert record["config"]["budget"]["stages"] == {"train": record["iterations"]}
    fixmatch = json.loads((tmp_path / "runs/synthetic/fixmatch/multi/labels50/seed0/result.json").read_text())
    assert fixmatch["unlabeled_mask_rate"] == 1.0  # p_cutoff 0: every pseudo-label passes
    curves = (tmp_path / "runs/synthetic/fixmatch/multi/labels50/seed0/curves.jsonl").read_text()
    assert "train/mask_rate" in curves and "train/pseudo_label_acc" in curves
    health = (tmp_path / "reports/health.md").read_text()
    assert "fixmatch" in health and "Per method" in health
