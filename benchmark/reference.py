"""The MICS paper's printed numbers (Tables II-IV, shipped under `benchmark/configs/reference/`) and how its
names map onto ours. Only the comparison with the paper reads the numbers; our own tables take
nothing from here but the ablation tables' layout (which components each setting switches on)."""
from __future__ import annotations

import pandas as pd

from .config import config_file

# Paper setting -> (our method, row label). `pretrain-all` and `finetune-all` are both the full model.
ABLATIONS: dict[str, tuple[str, str]] = {
    "pretrain-consistency": ("mics_t3_consistency", "Consistency"),
    "pretrain-consistency-reconstructive": ("mics_t3_consistency_reconstructive", "Consistency + reconstructive"),
    "pretrain-all": ("mics", "MICS (all)"),
    "vanilla": ("mics_t3_vanilla", "Vanilla"),
    "finetune-wli": ("mics_t4_wli", "WLI encoder"),
    "finetune-wli-nbi": ("mics_t4_wli_nbi", "WLI + NBI encoders"),
    "finetune-wli-nbi-svd": ("mics_t4_wli_nbi_svd", "WLI + NBI encoders + SVD"),
    "finetune-all": ("mics", "MICS (all)"),
}
# The component columns each table shows (the others are on in every row of that table).
COMPONENTS: dict[str, tuple[str, ...]] = {
    "III": ("consistency", "reconstructive", "aligned"),
    "IV": ("encoder_wli", "encoder_nbi", "svd", "tmc"),
}
COMPONENT_NAMES = {
    "consistency": "Consistency", "reconstructive": "Reconstructive", "aligned": "Aligned",
    "encoder_wli": "WLI enc.", "encoder_nbi": "NBI enc.", "svd": "SVD", "tmc": "TMC",
}


def ablation_presets() -> set[str]:
    """Our ablation methods (the full model `mics` is not one: it is Table II's MICS)."""
    return {method for method, _ in ABLATIONS.values()} - {"mics"}


def _read_csv(name: str) -> pd.DataFrame:
    with config_file("reference", name).open("r", encoding="utf-8") as f:
        return pd.read_csv(f)


def _ablation_csv() -> pd.DataFrame:
    return _read_csv("table3_table4.csv")


def ablation_layout(table: str) -> list[tuple[str, str, tuple[bool, ...]]]:
    """Rows of Table III or IV in the paper's order: (our method, label, component check marks)."""
    rows = _ablation_csv().query("table == @table").drop_duplicates("setting")
    return [(*ABLATIONS[r.setting], tuple(bool(getattr(r, c)) for c in COMPONENTS[table]))
            for r in rows.itertuples()]


def paper_numbers() -> pd.DataFrame:
    """Every printed number, under our names: table, method, mode, dataset, labels, top1."""
    t2 = _read_csv("table2.csv")
    t2 = t2.assign(table="II", method=t2["method"].str.lower())
    ab = _ablation_csv()
    ab = ab.assign(method=ab["setting"].map(lambda s: ABLATIONS[s][0]), mode="fused")
    cols = ["table", "method", "mode", "dataset", "labels", "top1"]
    return pd.concat([t2[cols], ab[cols]], ignore_index=True).astype({"labels": float})
