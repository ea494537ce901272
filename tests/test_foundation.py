"""Configs, splits, loaders, the training loop and the CLI's handling of bad input."""
import json

import numpy as np
import pytest
import torch

from benchmark.cli import main
from benchmark.harness.config import build_config, config_hash, parse_overrides, with_device
from benchmark.kit.data.loaders import BatchStream, step_generator, to_tensor, weak_augment
from benchmark.kit.data.splits import labeled_indices, split_indices
from benchmark.kit.errors import ConfigError

CLASSES = tuple(f"c{i}" for i in range(6))


def test_profiles_build_and_override():
    cfg = build_config("quick", "supervised", "single", "synthetic", 5, 0, parse_overrides(["train.iterations=7"]))
    assert cfg.train.iterations == 7 and cfg.profile == "quick" and cfg.labels == 5.0
    base = build_config("quick", "supervised", "single", "synthetic", 5, 0)
    assert config_hash(cfg) != config_hash(base)
    assert config_hash(base) == config_hash(build_config("quick", "supervised", "single", "synthetic", 5, 0))


def test_device_is_an_override_of_runtime_device_and_not_part_of_the_hash():
    """`--device cpu` is `--set runtime.device=cpu`; where a cell runs is not what it computes, so the device
    leaves the hash alone (the record says where it ran) and a grid moved to another device is not re-run."""
    overrides = with_device({"train.iterations": 7}, "cpu")
    assert overrides == {"train.iterations": 7, "runtime.device": "cpu"} and with_device({}, None) == {}
    cfg = build_config("quick", "supervised", "single", "synthetic", 5, 0, overrides)
    auto = build_config("quick", "supervised", "single", "synthetic", 5, 0, {"train.iterations": 7})
    assert cfg.runtime.device == "cpu" and auto.runtime.device == "auto"
    assert config_hash(cfg) == config_hash(auto)
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        with_device({}, "tpu")


def test_unknown_override_key_names_the_valid_keys():
    with pytest.raises(ConfigError, match="iterations"):
        build_config("smoke", "supervised", "single", "synthetic", 5, 0, parse_overrides(["train.iteration=7"]))
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["train.iterations"])


def test_split_is_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(6), 50)
    parts = split_indices(labels, (0.6, 0.2, 0.2), seed=0)
    assert sum(len(v) for v in parts.values()) == 300
    assert not set(parts["train"]) & set(parts["val"]) and not set(parts["val"]) & set(parts["test"])
    for c in range(6):
        assert np.sum(labels[parts["train"]] == c) == 30 and np.sum(labels[parts["test"]] == c) == 10
    assert not np.array_equal(parts["train"], split_indices(labels, (0.6, 0.2, 0.2), seed=1)["train"])


def test_labeled_subsets_are_nested_and_stratified():
    labels = np.repeat(np.arange(6), 50)
    train = split_indices(labels, (0.6, 0.2, 0.2), seed=3)["train"]
    subsets = [set(labeled_indices(train, labels, r, 3, CLASSES)) for r in (5, 10, 30, 50)]
    assert all(a <= b for a, b in zip(subsets, subsets[1:]))
    counts = np.bincount(labels[list(subsets[0])], minlength=6)
    assert (counts == round(30 * 0.05)).all()


def test_a_ratio_that_leaves_a_class_empty_is_an_error():
    labels = np.repeat(np.arange(6), 10)
    train = split_indices(labels, (0.6, 0.2, 0.2), seed=0)["train"]
    with pytest.raises(ConfigError, match="no labeled image"):
        labeled_indices(train, labels, 5, 0, CLASSES)


def test_batch_stream_is_a_function_of_step_and_covers_each_epoch():
    stream = BatchStream(10, 4, seed=1)
    assert np.array_equal(stream.indices(3), BatchStream(10, 4, seed=1).indices(3))
    first_epoch = np.concatenate([stream.indices(0), stream.indices(1), stream.indices(2)[:2]])
    assert sorted(first_epoch) == list(range(10))


def test_weak_augment_keeps_shape_and_content_and_is_seeded():
    x = to_tensor(np.random.default_rng(0).integers(0, 255, (5, 16, 16, 3), dtype=np.uint8))
    a, b = weak_augment(x, step_generator(0, 1)), weak_augment(x, step_generator(0, 1))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, weak_augment(x, step_generator(0, 2)))
    # a crop of a reflect-padded image: every output value comes from its input image
    assert set(a[0].flatten().tolist()) <= set(x[0].flatten().tolist())


@pytest.mark.parametrize("argv, message", [
    (["run", "--method", "nope"], "unknown method 'nope'"),
    (["run", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["run", "--profile", "huge"], "unknown profile 'huge'"),
    (["run", "--labels", "0"], "outside (0, 100]"),
    (["run", "--labels", "five"], "bad label ratios"),
    (["run", "--modes", "both"], "unknown mode 'both'"),
    (["run", "--device", "tpu"], "unknown device 'tpu'"),
    (["run", "--set", "train.nope=1", "--method", "supervised", "--dry-run"], "nope"),
    (["run", "--dataset", "kvasir", "--method", "supervised", "--profile", "smoke", "--device", "cpu", "--out", "OUT"], "--data-root"),
    (["data", "explode"], "unknown data action"),
])
def test_bad_input_is_one_line_and_exit_code_2(argv, message, capsys, tmp_path):
    argv = [str(tmp_path) if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_a_smoke_run_writes_a_complete_record(tmp_path, smoke_args):
    assert main(["run", "--method", "supervised", "--labels", "50", *smoke_args, "--out", str(tmp_path),
                 "--reports", str(tmp_path / "reports")]) == 0
    record = json.loads(next(tmp_path.glob("runs/synthetic/supervised/single/labels50/seed0/result.json")).read_text())
    for key in ("method", "mode", "dataset", "labels", "seed", "profile", "test_top1", "test_top1_last",
                "val_top1_best", "test_top1_ci95", "n_labeled", "n_unlabeled", "n_val", "n_test",
                "iterations", "wall_s", "device", "peak_rss_mb", "config", "config_hash", "code_version",
                "unlabeled_mask_rate", "pseudo_label_acc", "collapsed"):
        assert key in record, key
    low, high = record["test_top1_ci95"]
    assert low <= record["test_top1"] <= high
    # USB's include_lb_to_ulb: every training image is also an unlabeled one
    assert record["config"]["data"]["include_labeled_in_unlabeled"] is True
    assert record["n_unlabeled"] + record["n_val"] + record["n_test"] == 240 and record["n_labeled"] == 72
    assert record["unlabeled_mask_rate"] is None and record["pseudo_label_acc"] is None  # no mask
    assert isinstance(record["collapsed"], bool)
    # the method as registered, so that reports need no registry
    assert (record["label"], record["family"], record["group"]) == ("Supervised", "bounds", "table2")


def test_data_describe_and_samples(tmp_path, capsys):
    assert main(["data", "describe", "--dataset", "synthetic", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "normal-pylorus" in out and "labeled@5%" in out and "total" in out
    assert main(["data", "samples", "--dataset", "synthetic", "--profile", "smoke", "--out", str(tmp_path)]) == 0
    from PIL import Image

    grid = Image.open(tmp_path / "samples_synthetic.png")
    assert grid.size == (8 * 32, 12 * 32)  # 8 per class; a WLI and an NBI row for each of 6 classes
