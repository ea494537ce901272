"""The paper path on a GPU, checked on the CPU: resume on any device, weights that fit or fail, the weights'
own normalisation, AMP in every method family, a dry run that checks and counts, every listed key settable,
no host read per step, and a cell's whole time."""
from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from torch import nn

import benchmark.harness.evaluate
from benchmark.cli import main
from benchmark.harness.config import build_config
from benchmark.harness.disk import probe_loops
from benchmark.harness.grid import Cell
from benchmark.kit import models
from benchmark.kit.contract import RunContext
from benchmark.kit.data.loaders import MEAN, STD, normalised_with, to_tensor
from benchmark.kit.health import PseudoLabelMonitor, PseudoLabels
from benchmark.kit.schema import TrainConfig
from benchmark.kit.training import TrainingLoop, atomic_save

SMOKE = ["--profile", "smoke", "--device", "cpu", "--workers", "1"]  # cells in this process: monkeypatches reach them
TINY_HUB_ID = "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"  # timm's default weights of the smoke arch


def _train(**changes) -> TrainConfig:
    """A whole train section for a loop of these tests: no warm-up, EMA or weight decay unless changed."""
    return TrainConfig(**{"warmup_iterations": 0, "ema_momentum": 0.0, "weight_decay": 0.0, "min_lr": 0.0,
                          **changes})


def _record(out: Path, method: str = "supervised", mode: str = "single", labels: str = "50") -> dict:
    return json.loads((out / "runs" / "synthetic" / method / mode / f"labels{labels}" / "seed0" / "result.json").read_text())


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def _tiny_timm_file(path: Path, **changes) -> Path:
    """A timm state dict of the smoke profile's ViT with ImageNet's 1000 classes, as a weights file holds."""
    kwargs = {**build_config("smoke", "supervised", "single", "synthetic", 50, 0).model.kwargs, **changes}
    torch.save(timm.create_model("vit_tiny_patch16_224", num_classes=1000, **kwargs).state_dict(), path)
    return path


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
    train = _train(iterations=6, eval_every=3, lr=0.1, optimizer="sgd")
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


# -- 2: weights that fit or fail ----------------------------------------------------------------------------
@pytest.mark.parametrize("init", ["imagenet", "suite"])
def test_a_weights_file_without_the_backbone_weights_ends_the_run_before_any_cell(tmp_path, capsys, init):
    path = tmp_path / "unrelated.pt"
    torch.save({"encoder.layer.0.weight": torch.zeros(4, 4), "head.weight": torch.zeros(6, 4)}, path)
    argv = ["run", *SMOKE, "--method", "supervised", "--labels", "50", "--out", str(tmp_path / "out"),
            "--set", f"model.init={init}", "--set", f"model.weights={path}"]
    assert main(argv) == 2
    err = _one_line_error(capsys)
    assert str(path) in err and "lacks weight 'cls_token'" in err, err
    assert not (tmp_path / "out" / "runs").exists()


def test_a_timm_file_is_loaded_through_timms_filter_and_checked(tmp_path):
    """A 224-pixel file into a 32-pixel model: the position embeddings are resampled, every other weight kept."""
    path = _tiny_timm_file(tmp_path / "in1k_224.pth", img_size=224)
    cfg = build_config("smoke", "supervised", "single", "synthetic", 50, 0).model.model_copy(
        update={"init": "imagenet", "weights": str(path)})
    model = models.create_backbone(cfg, num_classes=6)
    source = torch.load(path, weights_only=True)
    assert torch.equal(model.state_dict()["blocks.0.attn.qkv.weight"], source["blocks.0.attn.qkv.weight"])
    assert model.pos_embed.shape[1] == 1 + (32 // 8) ** 2 != source["pos_embed"].shape[1]


# -- 3: the weights' own normalisation ----------------------------------------------------------------------
def test_inputs_are_normalised_with_the_statistics_of_the_weights_loaded(tmp_path):
    smoke = build_config("smoke", "supervised", "single", "synthetic", 50, 0).model
    timm_cfg = timm.models.get_pretrained_cfg(smoke.arch)
    assert models.input_normalisation(smoke.model_copy(update={"init": "imagenet"})) == {"mean": list(timm_cfg.mean),
                                                                                          "std": list(timm_cfg.std)}
    assert timm_cfg.mean != MEAN  # timm's ViT weights are not trained with ImageNet's statistics
    assert models.input_normalisation(smoke) == {"mean": list(MEAN), "std": list(STD)}  # suite's own
    assert models.input_normalisation(smoke.model_copy(update={"mean": [0.1, 0.2, 0.3]}))["mean"] == [0.1, 0.2, 0.3]
    white = np.full((1, 2, 2, 3), 255, dtype=np.uint8)
    with normalised_with([0.5] * 3, [0.25] * 3):
        assert torch.all(to_tensor(white) == 2.0)
    assert torch.allclose(to_tensor(white)[0, :, 0, 0], (1 - torch.tensor(MEAN)) / torch.tensor(STD))

    path = _tiny_timm_file(tmp_path / "in1k.pth")
    out = tmp_path / "out"
    assert main(["run", *SMOKE, "--method", "supervised", "--labels", "50", "--out", str(out),
                 "--set", "model.init=imagenet", "--set", f"model.weights={path}", "--set", "train.iterations=1"]) == 0
    recorded = _record(out)["config"]["model"]
    assert (recorded["mean"], recorded["std"]) == (list(timm_cfg.mean), list(timm_cfg.std))


# -- 4: AMP in every method family --------------------------------------------------------------------------
def test_every_method_family_trains_under_amp(tmp_path):
    """bfloat16 autocast, as on the CPU: one of each family (bounds, USB, HABIT, SIAVC, MICS, CMC, RFPMSS)."""
    families = "supervised,fixmatch,habit,siavc,mics,cmc,rfpmss"
    argv = ["run", *SMOKE, "--method", families, "--modes", "single,fused", "--labels", "50", "--out", str(tmp_path),
            "--set", "runtime.amp=true", "--set", "train.iterations=2", "--set", "train.eval_every=2",
            "--set", "method.finetune.train.iterations=2", "--set", "method.pretrain.epochs=0.1"]
    assert main(argv) == 0
    for method in families.split(","):
        mode = "fused" if method in ("mics", "cmc", "rfpmss") else "single"
        assert 0 <= _record(tmp_path, method, mode)["test_top1"] <= 100


# -- 5: offline -------------------------------------------------------------------------------------------
def test_offline_the_weights_to_fetch_are_named_before_the_hub_is_asked(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    def unreachable(*args, **kwargs):
        raise OSError("no route to host")

    def forbidden(*args, **kwargs):
        raise AssertionError("the hub was asked for the file")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", unreachable)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", forbidden)
    argv = ["run", *SMOKE, "--method", "supervised", "--labels", "50", "--out", str(tmp_path / "out"),
            "--set", "model.init=imagenet"]
    start = time.perf_counter()
    assert main(argv) == 2
    err = _one_line_error(capsys)
    assert TINY_HUB_ID in err and "model.safetensors" in err and "model.weights=PATH" in err, err
    assert time.perf_counter() - start < 30
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert main(argv) == 2 and "HF_HUB_OFFLINE" in _one_line_error(capsys)

    # In the Hugging Face cache, the file is used as it is: the hub is not asked.
    snapshot = tmp_path / "hub" / f"models--{TINY_HUB_ID.replace('/', '--')}" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    from safetensors.torch import save_file

    save_file(torch.load(_tiny_timm_file(tmp_path / "w.pth"), weights_only=True), snapshot / "model.safetensors")
    assert models.hub_weights("vit_tiny_patch16_224") == str(snapshot / "model.safetensors")


# -- 6: the dry run ---------------------------------------------------------------------------------------
def test_a_dry_run_refuses_what_a_run_refuses(tmp_path, capsys):
    argv = ["run", "--profile", "paper", "--dataset", "kvasir", "--device", "cpu", "--method", "supervised", "--labels", "50",
            "--out", str(tmp_path / "out"), "--set", "model.init=random", "--dry-run",
            "--set", "model.arch=vit_tiny_patch16_224"]  # a smaller ViT to build: the data is what is refused
    assert main(argv) == 2
    assert "needs --data-root" in _one_line_error(capsys)
    assert main(argv + ["--data-root", str(tmp_path / "nothing")]) == 2
    assert str(tmp_path / "nothing") in _one_line_error(capsys)


def test_a_dry_run_prints_the_cells_and_their_disk(tmp_path, capsys):
    assert main(["run", *SMOKE, "--method", "supervised,habit,mics", "--modes", "single,fused", "--labels", "50",
                 "--out", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "3 cells: 3 todo" in out and "model.pt not written" in out
    assert "disk, while a cell runs: up to" in out and "(habit/single;" in out
    assert "not sized: the training loops that start after another one has trained, in mics/fused" in out
    assert not (tmp_path / "runs").exists()


def test_the_disk_probe_sizes_checkpoints_as_they_are_written(tmp_path):
    """The probe's checkpoint size against a real checkpoint of the same loop once it holds all it will: the
    optimizer's moments (after a step) and the best validation copy (after the first validation, at 3)."""
    cfg = build_config("smoke", "habit", "single", "synthetic", 50, 0)
    (probed,) = probe_loops(Cell("synthetic", "habit", "single", 50.0, 0, cfg=cfg))
    from benchmark.kit import budget
    from benchmark.kit.data import load_dataset, make_split
    from methods import get_method

    raw, cache = load_dataset(cfg.data)
    split = make_split(raw, cache, cfg.data, 50, 0)
    cfg = budget.apply(cfg, get_method("habit").stage_iterations(cfg, split.sizes()))
    loops = []

    def after_a_validation(loop, done, total):
        if done == 4:
            atomic_save(loops[0]._state(done), tmp_path / "checkpoint.pt")
            raise KeyboardInterrupt

    ctx = RunContext(device=torch.device("cpu"), seed=0, run_dir=tmp_path, cache_dir=tmp_path,
                     progress=after_a_validation, on_loop=loops.append)
    with pytest.raises(KeyboardInterrupt):
        get_method("habit").train(split, cfg, ctx)
    written = (tmp_path / "checkpoint.pt").stat().st_size
    assert probed.checkpoint <= written < 1.1 * probed.checkpoint + 100_000  # + pickling and the RNG states


# -- 6: model.pt only where it is needed --------------------------------------------------------------
def test_model_pt_is_written_only_when_asked_for(tmp_path):
    argv = ["run", *SMOKE, "--method", "supervised", "--labels", "50", "--set", "train.iterations=1"]
    assert main(argv + ["--out", str(tmp_path / "a")]) == 0
    folder = tmp_path / "a" / "runs" / "synthetic" / "supervised" / "single" / "labels50" / "seed0"
    assert (folder / "test_outputs.npz").exists() and not (folder / "model.pt").exists()
    assert main(argv + ["--out", str(tmp_path / "a")]) == 0  # finished: no model.pt is missing
    assert main(argv + ["--out", str(tmp_path / "b"), "--set", "runtime.save_model=true"]) == 0
    assert (tmp_path / "b" / folder.relative_to(tmp_path / "a") / "model.pt").exists()


# -- 7: every listed key is settable ------------------------------------------------------------------------
@pytest.mark.parametrize("profile", ["smoke", "paper"])
def test_every_key_config_keys_lists_is_taken_by_set(profile, capsys):
    assert main(["config", "keys", "--profile", profile, "--method", "mics"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("method.finetune.train.iterations: int | None = None") for line in lines)
    overrides, unreadable = {}, []
    for line in lines:
        key, _, rest = line.partition(": ")
        shown = rest.split(" = ", 1)[1].split("  # ")[0]
        shown = shown.rsplit(" (", 1)[0] if shown.endswith(")") and not shown.startswith(("(", "[")) else shown
        try:
            overrides[key] = ast.literal_eval(shown)
        except ValueError:  # a list of sections, shown as their reprs
            unreadable.append(key)
    assert unreadable == ["time_constants"] and len(overrides) == len(lines) - 1
    build_config(profile, "mics", "fused", "synthetic", 50, 0, overrides)  # no key refused
    set_one = build_config(profile, "mics", "fused", "synthetic", 50, 0, {"method.finetune.train.iterations": 3})
    assert set_one.method.finetune.train.iterations == 3


# -- 8: no host read per step -------------------------------------------------------------------------------
def test_the_loop_and_the_health_monitor_read_nothing_on_the_host_between_logs(tmp_path, monkeypatch):
    """Every way a tensor's value reaches Python is watched; reads happen only at the steps the loop logs
    at (every 10), never at the others, which on CUDA would each wait for the device."""
    model = _Linear(classes=4)
    monitor = PseudoLabelMonitor(np.arange(16) % 4)
    ctx = RunContext(device=torch.device("cpu"), seed=0, run_dir=tmp_path, cache_dir=tmp_path, health=monitor)
    current = {"it": -1}
    reads: set[int] = set()
    for name in ("__bool__", "__float__", "__int__", "item", "tolist", "numpy", "cpu"):
        original = getattr(torch.Tensor, name)

        def watched(self, *args, _original=original, **kwargs):
            reads.add(current["it"])
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, watched)

    def step(it):
        current["it"] = it
        x = torch.randn(8, 3, 2, 2, generator=torch.Generator().manual_seed(it))
        logits = model.predict({"wli": x})
        idx = torch.arange(8) + 8 * (it % 2)
        return {"loss": nn.functional.cross_entropy(logits, idx % 4), "mask_ratio": logits.softmax(1).amax(1).mean(),
                "pseudo_labels": PseudoLabels(idx, (logits.amax(1) > 0).float(), logits.argmax(1))}

    train = _train(iterations=20, eval_every=20, lr=0.1, optimizer="adamw")
    TrainingLoop(model, train, ctx, None).run(step)
    assert reads <= {9, 19}, sorted(reads)  # the steps whose end the loop logs at (done = 10, 20)
    assert monitor.summary()["unlabeled_mask_rate"] is not None


def test_teacher_updates_in_one_call_keep_the_per_tensor_arithmetic():
    from methods.habit.cmh import ConsistencyAwareMomentumHeredity
    from methods.habit.mrnet import MRNet

    cfg = build_config("smoke", "habit", "single", "synthetic", 50, 0).model.model_copy(update={"init": "random"})
    student = MRNet(cfg, 6, 3)
    teacher = MRNet(cfg, 6, 3).requires_grad_(False)
    expected = [t.detach().clone() for t in teacher.parameters()]
    heredity = ConsistencyAwareMomentumHeredity(student, teacher, 0.99, 1.0)
    heredity.update()
    for e, s in zip(expected, student.parameters()):
        e.lerp_(s.detach(), 1.0 - heredity.momentum)
    assert all(torch.equal(e, t) for e, t in zip(expected, teacher.parameters()))

    from methods.mics.pretraining import SynergisticPretrainer

    mics = build_config("smoke", "mics", "fused", "synthetic", 50, 0)
    model_cfg = mics.model.model_copy(update={"init": "random"})
    pre = SynergisticPretrainer(models.create_backbone(model_cfg, 0), models.create_backbone(model_cfg, 0),
                                mics.method.pretrain)
    with torch.no_grad():
        for p in pre.enc_w.parameters():
            p.add_(1.0)
    m = mics.method.pretrain.consistency.momentum
    expected = [p_m.detach().clone().mul_(m).add_(p.detach(), alpha=1 - m) for p, p_m in pre._momentum_pairs()]
    pre.momentum_update()
    assert all(torch.equal(e, p_m) for e, (_, p_m) in zip(expected, pre._momentum_pairs()))


def test_sab_draws_its_noise_where_the_images_are_from_the_steps_generator():
    from methods.siavc.sab import SuperAugmentationBlock

    sab = SuperAugmentationBlock(4, 3, mask_prob=0.5, noise_std=8.0, patch=2, device=torch.device("cpu"))
    x = torch.zeros(2, 3, 4, 4)
    got = sab.augment(x, torch.tensor([True, False]), sab.draw(x.shape, torch.Generator().manual_seed(5), x.device))
    g = torch.Generator().manual_seed(5)  # the same draws in the same order: the mask, then the noise
    keep = (torch.rand(2, 1, 2, 2, generator=g) >= 0.5).repeat_interleave(2, 2).repeat_interleave(2, 3)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    pixels = (x * std + mean) * 255.0
    heavy = ((pixels * keep + torch.randn(x.shape, generator=g) * 8.0).clamp(0.0, 255.0) / 255.0 - mean) / std
    assert torch.equal(got[0], heavy[0]) and torch.equal(got[1], x[1])


def test_a_non_finite_loss_stops_the_run_before_its_next_checkpoint(tmp_path):
    model = _Linear()
    ctx = RunContext(device=torch.device("cpu"), seed=0, run_dir=tmp_path, cache_dir=tmp_path)

    def step(it):
        loss = nn.functional.cross_entropy(model.predict({"wli": torch.randn(4, 3, 2, 2)}), torch.zeros(4).long())
        return {"loss": loss * float("nan") if it == 2 else loss}

    from benchmark.kit.training import NonFiniteLoss

    with pytest.raises(NonFiniteLoss, match="loss is nan at iteration 2"):
        TrainingLoop(model, _train(iterations=12, eval_every=4, lr=0.1), ctx, None).run(step)
    assert not (tmp_path / "train_checkpoint.pt").exists()


# -- 9: a cell's whole time ---------------------------------------------------------------------------------
def test_wall_s_covers_the_test_pass_and_the_outputs(tmp_path, monkeypatch):
    real = benchmark.harness.evaluate._save_outputs

    def slow(*args, **kwargs):
        time.sleep(1.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(benchmark.harness.evaluate, "_save_outputs", slow)
    assert main(["run", *SMOKE, "--method", "supervised", "--labels", "50", "--out", str(tmp_path),
                 "--set", "train.iterations=1"]) == 0
    assert _record(tmp_path)["wall_s"] >= 1.5
