"""The typed config schema: what it refuses (one line, exit 2, before any cell), what it fills in, and the
configs read from the package or from a user's folder."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import methods
from benchmark.cli import main
from benchmark.harness.config import build_config
from benchmark.kit.config_files import load_profile, profile_names
from benchmark.kit.errors import ConfigError
from benchmark.kit.schema import ProfileConfig, describe


@pytest.mark.parametrize("pair, message", [
    ("train.iterations=-3", "bad value -3 for train.iterations: input should be greater than or equal to 1"),
    ("train.iterations=abc", "bad value 'abc' for train.iterations: input should be a valid integer"),
    ("train.ema_momentum=1.5", "train.ema_momentum: input should be less than 1"),
    ("runtime.device=tpu", "runtime.device: input should be 'auto', 'cpu' or 'cuda'"),
    ("data.nbi=foo", "data.nbi: allowed: spectral, paired or generator:PATH"),
    ("data.split=[0.5,0.5]", "data.split: list should have at least 3 items"),
    ("method.p_cutoff=2", "method.p_cutoff: input should be less than or equal to 1"),
])
def test_a_set_the_schema_refuses_ends_before_any_cell(pair, message, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["run", "--profile", "smoke", "--method", "fixmatch", "--labels", "50", "--out", str(out),
                 "--set", pair])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert err.startswith("error: --set:") and not out.exists()


def test_every_profile_is_a_valid_delta_over_the_defaults() -> None:
    assert set(profile_names()) >= {"smoke", "quick", "paper"}
    assert load_profile("quick") == ProfileConfig().model_dump()  # quick: the defaults themselves
    smoke = load_profile("smoke")
    assert smoke["train"]["iterations"] == 6 and smoke["train"]["eval_batch_size"] == 128
    assert smoke["train"]["optimizer"] == "adamw"  # not in smoke.yaml: the default
    for name in ("smoke", "quick", "paper"):
        for spec in methods.list_methods():
            cfg = build_config(name, spec.name, spec.modes[0], "synthetic", 50, 0)
            method = cfg.method.model_dump()
            assert type(cfg.method) is spec.config, (name, spec.name)  # the family's own schema, not a bare Section
            assert spec.config.model_validate(method).model_dump() == method, (name, spec.name)  # a record reads back


def test_values_take_their_declared_type() -> None:
    cfg = build_config("smoke", "mics", "fused", "synthetic", 50, 0, {"train.lr": "1e-3", "method.pretrain.epochs": 2})
    assert cfg.train.lr == 0.001 and isinstance(cfg.method.pretrain.epochs, float)
    finetune_train = build_config("smoke", "mics", "fused", "synthetic", 50, 0).method.finetune.train
    assert "iterations" not in finetune_train.model_dump()


def test_a_users_configs_folder_comes_first(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "tiny.yaml").write_text(yaml.safe_dump({"train": {"iterations": 2}}))
    (tmp_path / "profiles" / "broken.yaml").write_text(yaml.safe_dump({"train": {"iteratons": 2}}))
    monkeypatch.setenv("MICS_BENCH_CONFIGS", str(tmp_path))
    assert load_profile("tiny")["train"]["iterations"] == 2 and "tiny" in profile_names()
    assert load_profile("smoke")["train"]["iterations"] == 6  # the shipped ones stay reachable
    with pytest.raises(ConfigError, match=r"broken\.yaml: unknown config key 'train.iteratons'"):
        load_profile("broken")
    assert main(["config", "show", "--profile", "broken"]) == 2
    assert "broken.yaml" in capsys.readouterr().err


def test_config_show_prints_the_effective_config(capsys) -> None:
    assert main(["config", "show", "--profile", "quick", "--method", "fixmatch", "--set", "method.T=0.7"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    expected = build_config("quick", "fixmatch", "single", "synthetic", 5, 0, {"method.T": 0.7})
    assert shown == expected.model_dump(exclude={"budget"})
    assert main(["config", "keys", "--method", "dash"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) == len(describe()) + len(describe(methods.get_method("dash").config))
    iterations = load_profile("quick")["train"]["iterations"]
    assert any(line.startswith(f"train.iterations: int = {iterations} (>= 1)  # training steps") for line in listing)
    warmup = build_config("quick", "dash", "single", "synthetic", 5, 0).method.num_wu_iter
    assert any(line.startswith(f"method.num_wu_iter: int = {warmup} (>= 0)") for line in listing)


def test_the_program_names_itself_and_its_version(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("mics-bench 0.")
    with pytest.raises(SystemExit):
        main(["--help"], prog="python -m benchmark")
    assert capsys.readouterr().out.startswith("usage: python -m benchmark")
