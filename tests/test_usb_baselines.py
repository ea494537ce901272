"""The USB baselines: semilearn's own algorithms behind methods/usb, on the smoke profile, on the CPU."""
from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchmark.cli import main as cli
from benchmark.harness.config import build_config
from benchmark.kit import budget
from benchmark.kit.contract import RunContext
from benchmark.kit.data import load_dataset, make_split
from benchmark.kit.data.loaders import step_generator, to_tensor, weak_augment
from benchmark.kit.errors import ConfigError
from benchmark.kit.runtime import configure_threads, seed_everything
from methods.schema import MethodConfig
from methods.usb import USBRun
from methods.usb.config import FixMatchConfig

ALGORITHMS = ("fixmatch", "flexmatch", "dash", "freematch", "softmatch")
SEED = 0


@functools.lru_cache(maxsize=None)
def _split(labels: float = 50.0, include_labeled: bool = True):
    cfg = build_config("smoke", "fixmatch", "single", "synthetic", labels, SEED)
    cfg.data.include_labeled_in_unlabeled = include_labeled
    raw, folder = load_dataset(cfg.data)
    return make_split(raw, folder, cfg.data, labels, SEED)


def _run(name: str, mode: str, folder: Path, labels: float = 50.0, schema: type[MethodConfig] | None = None,
         **method) -> USBRun:
    """A USBRun on the smoke split, seeded as the runner seeds it; `method` overrides keys of its `cfg.method`,
    checked by `schema` (the method's own unless given)."""
    cfg = build_config("smoke", name, mode, "synthetic", labels, SEED)
    cfg.method = (schema or type(cfg.method)).model_validate({**cfg.method.model_dump(), **method})
    cfg = budget.apply(cfg, {"train": cfg.train.iterations})  # as the runner scales it
    configure_threads(1)
    seed_everything(SEED)
    folder.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(device=torch.device("cpu"), seed=SEED, run_dir=folder, cache_dir=folder / "cache")
    return USBRun(name, _split(labels), cfg, ctx)


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a.cpu(), b.cpu())
    return a == b


def test_every_algorithm_and_bound_writes_a_record(tmp_path: Path, smoke_args) -> None:
    out = tmp_path / "out"
    names = ",".join(ALGORITHMS + ("supervised", "fullysupervised"))
    assert cli(["run", "--method", names, "--labels", "50", "--modes", "single,multi", *smoke_args,
                "--out", str(out)]) == 0
    table = pd.read_csv(out / "results.csv")
    cells = set(zip(table["method"], table["mode"], table["labels"]))
    expected = {(a, m, 50.0) for a in ALGORITHMS for m in ("single", "multi")}
    expected |= {("supervised", "single", 50.0), ("fullysupervised", "single", 100.0)}
    assert cells == expected
    assert table["test_top1"].between(0, 100).all() and (table["iterations"] == 6).all()
    for name in ALGORITHMS:
        folder = out / "runs" / "synthetic" / name / "multi" / "labels50" / "seed0"
        record = json.loads((folder / "result.json").read_text())
        assert record["config"]["method"]["name"] == name and record["n_unlabeled"] > 0
        assert record["info"]["usb_algorithm"].lower() == name
        assert not list(folder.glob("*_checkpoint.pt"))  # finished runs keep no checkpoint
        logged = {json.loads(line)["name"] for line in (folder / "curves.jsonl").read_text().splitlines()}
        assert {"train/loss", "train/unsup_loss", "train/util_ratio", "train/val_top1"} <= logged


def test_multi_hands_the_nbi_view_to_train_step(tmp_path: Path) -> None:
    it = 2
    seen = {}
    for name in ("fixmatch", "flexmatch"):
        for mode in ("single", "multi"):
            run = _run(name, mode, tmp_path / name / mode)
            original = run.algorithm.train_step

            @functools.wraps(original)  # keeps the signature the adapter filters the batch by
            def spy(*args, _original=original, _key=(name, mode), **kwargs):
                seen[_key] = kwargs
                return _original(*args, **kwargs)

            run.algorithm.train_step = spy
            run.step(it)
    part = _split().unlabeled
    for name in ("fixmatch", "flexmatch"):
        single, multi = seen[(name, "single")], seen[(name, "multi")]
        idx = run.unlabeled.stream.indices(it)
        nbi_weak = weak_augment(to_tensor(part.nbi[idx]), step_generator(SEED, it, salt=4))
        wli_weak = weak_augment(to_tensor(part.wli[idx]), step_generator(SEED, it, salt=2))
        assert torch.equal(multi["x_ulb_s"], nbi_weak)  # the paired NBI image, weakly augmented
        assert torch.equal(multi["x_ulb_w"], wli_weak) and torch.equal(single["x_ulb_w"], wli_weak)
        assert not torch.allclose(single["x_ulb_s"], nbi_weak)  # single: RandAugment of the WLI image
        assert not torch.allclose(single["x_ulb_s"], weak_augment(to_tensor(part.wli[idx]), step_generator(SEED, it, salt=4)))
    assert "idx_ulb" not in seen[("fixmatch", "multi")]  # filtered by train_step's signature
    assert torch.equal(seen[("flexmatch", "multi")]["idx_ulb"], torch.as_tensor(idx))


# What each algorithm's own logic must have changed after a few steps. FlexMatch's threshold is
# lowered so that a six-step model's predictions pass it and update the class-wise statistics.
CHANGES = {
    "fixmatch": ({}, [("algorithm", "it")]),
    "flexmatch": ({"p_cutoff": 0.0}, [("MaskingHook", "selected_label"), ("MaskingHook", "classwise_acc")]),
    "dash": ({}, [("algorithm", "rho_init"), ("MaskingHook", "rho"), ("MaskingHook", "rho_update_cnt")]),
    "freematch": ({}, [("MaskingHook", "p_model"), ("MaskingHook", "time_p"), ("MaskingHook", "label_hist")]),
    "softmatch": ({}, [("MaskingHook", "prob_max_mu_t"), ("MaskingHook", "prob_max_var_t"), ("DistAlignHook", "p_model")]),
}


@pytest.mark.parametrize("name", ALGORITHMS)
def test_usb_state_changes_during_training(tmp_path: Path, name: str) -> None:
    method, keys = CHANGES[name]
    run = _run(name, "multi", tmp_path, **method)
    alg = run.algorithm
    assert set(alg.hooks_dict) <= {"MaskingHook", "PseudoLabelingHook", "DistAlignHook"}  # no CUDA-only hooks
    assert alg.optimizer is None and alg.ema_model is None and run.model is alg.model
    before = copy.deepcopy(run.state_dict())
    trained = run.fit()
    after = run.state_dict()

    def get(state, where, key):
        return state["algorithm"].get(key) if where == "algorithm" else state["hooks"][where].get(key)

    for where, key in keys:
        assert not _same(get(before, where, key), get(after, where, key)), f"{name}: {where}.{key} did not change"
    assert after["algorithm"]["it"] == run.iterations - run.warmup == trained.iterations - run.warmup
    if name == "dash":
        assert run.warmup == 1 and 0 < after["algorithm"]["rho_init"] < 10


@pytest.mark.parametrize("name", ["flexmatch", "dash"])
def test_resumed_run_continues_exactly(tmp_path: Path, name: str) -> None:
    method = CHANGES[name][0]
    whole = _run(name, "single", tmp_path / "whole", **method)
    whole.fit()

    class Killed(Exception):
        pass

    crashing = _run(name, "single", tmp_path / "resumed", **method)
    step = crashing.step

    def killed_at_4(it: int) -> dict:
        if it == 4:
            raise Killed
        return step(it)

    crashing.step = killed_at_4
    with pytest.raises(Killed):  # killed after the checkpoint of step 3 (smoke: eval_every 3)
        crashing.fit()
    assert (tmp_path / "resumed" / "train_checkpoint.pt").exists()
    resumed = _run(name, "single", tmp_path / "resumed", **method)
    steps, step = [], resumed.step
    resumed.step = lambda it: steps.append(it) or step(it)
    resumed.fit()
    assert steps == [3, 4, 5]  # continued from the checkpoint, not from scratch
    assert _same(resumed.state_dict(), whole.state_dict())
    for (k, a), (_, b) in zip(whole.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k


class _Misspelt(FixMatchConfig):
    p_cutof: float  # a key semilearn does not know


class _ProfileKey(FixMatchConfig):
    lr: float  # a semilearn argument the profile's `train` section sets


def test_bad_settings_end_with_one_line(tmp_path: Path) -> None:
    # A method schema that declares a key semilearn does not take, or one the harness sets for every method,
    # is refused by the adapter (a YAML's unknown key is refused before, by the schema itself).
    with pytest.raises(ConfigError, match="unknown semilearn argument 'p_cutof'"):
        _run("fixmatch", "single", tmp_path, schema=_Misspelt, p_cutof=0.9)
    with pytest.raises(ConfigError, match="profile sets it"):
        _run("fixmatch", "single", tmp_path, schema=_ProfileKey, lr=0.1)
    ctx = RunContext(device=torch.device("cpu"), seed=SEED, run_dir=tmp_path, cache_dir=tmp_path / "cache")
    cfg = build_config("smoke", "fixmatch", "single", "synthetic", 100.0, SEED)
    with pytest.raises(ConfigError, match="needs unlabeled images"):  # without USB's include_lb_to_ulb
        USBRun("fixmatch", _split(100.0, include_labeled=False), cfg, ctx)
    # with it (the profiles' default), at 100 % labels every labeled image is also an unlabeled one
    assert len(_run("fixmatch", "single", tmp_path, labels=100.0).data.unlabeled) == 144
    with pytest.raises(ConfigError, match="num_wu_iter"):
        _run("dash", "single", tmp_path, num_wu_iter=204800)  # all of its reference budget: the whole run


def test_use_cat_false_gives_the_same_loss_and_gradients(tmp_path: Path) -> None:
    """Our YAMLs set use_cat: false (USB: true): with a LayerNorm ViT and the weak view detached in all
    five algorithms, the separate forward passes give the same loss and gradients, with less backward."""
    for name in ALGORITHMS:
        runs = [_run(name, "single", tmp_path / name / str(cat), use_cat=cat) for cat in (True, False)]
        runs[1].model.load_state_dict(runs[0].model.state_dict())
        it = runs[0].warmup  # the first semi-supervised step
        for run in runs:
            run.model.zero_grad()
            run.loss = run.step(it)["loss"]
            run.loss.backward()
        torch.testing.assert_close(runs[0].loss, runs[1].loss, rtol=1e-5, atol=1e-6)
        for p, q in zip(runs[0].model.parameters(), runs[1].model.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)
