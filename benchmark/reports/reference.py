"""The MICS paper's printed numbers (Tables II-IV, shipped under `configs/reference/`) and how its
names map onto ours. Only the comparison with the paper reads the numbers; our own tables take
nothing from here but the ablation tables' layout (which components each setting switches on)."""
from __future__ import annotations

import json

import pandas as pd

from benchmark.kit.config_files import config_file

# The component columns each table shows (the others are on in every row of that table).
COMPONENTS: dict[str, tuple[str, ...]] = {
    "III": ("consistency", "reconstructive", "aligned"),
    "IV": ("encoder_wli", "encoder_nbi", "svd", "tmc"),
}
COMPONENT_NAMES = {
    "consistency": "Consistency", "reconstructive": "Reconstructive", "aligned": "Aligned",
    "encoder_wli": "WLI enc.", "encoder_nbi": "NBI enc.", "svd": "SVD", "tmc": "TMC",
}


PAPER_METHOD = "mics"  # the method the paper proposes: drawn apart from the others in the figures


def ablations(results: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """Paper setting -> (our method, row label) for the methods of `results`, as each declared at registration
    (`paper_rows`, written into its records); `pretrain-all` and `finetune-all` are both the full model."""
    rows = results[["method", "paper_rows"]].drop_duplicates("method")
    return {setting: (method, label) for method, text in rows.itertuples(index=False)
            for setting, label in json.loads(text or "[]")}


def _read_csv(name: str) -> pd.DataFrame:
    with config_file("reference", name).open("r", encoding="utf-8") as f:
        return pd.read_csv(f)


def _ablation_csv() -> pd.DataFrame:
    return _read_csv("table3_table4.csv")


def ablation_layout(table: str, results: pd.DataFrame) -> list[tuple[str, str, tuple[bool, ...]]]:
    """Rows of Table III or IV in the paper's order that `results` has a method for: (our method, label,
    component check marks)."""
    rows = _ablation_csv().query("table == @table").drop_duplicates("setting")
    names = ablations(results)
    return [(*names[r.setting], tuple(bool(getattr(r, c)) for c in COMPONENTS[table]))
            for r in rows.itertuples() if r.setting in names]


def paper_order() -> list[str]:
    """Table II's methods in the paper's row order, under our names."""
    return list(dict.fromkeys(_read_csv("table2.csv")["method"].str.lower()))


def paper_numbers(results: pd.DataFrame) -> pd.DataFrame:
    """Every printed number under our names (the ablation settings of the methods `results` has): table,
    method, mode, dataset, labels, top1."""
    t2 = _read_csv("table2.csv")
    t2 = t2.assign(table="II", method=t2["method"].str.lower())
    names = ablations(results)
    ab = _ablation_csv().query("setting in @names")
    ab = ab.assign(method=ab["setting"].map(lambda s: names[s][0]), mode="fused")
    cols = ["table", "method", "mode", "dataset", "labels", "top1"]
    return pd.concat([t2[cols], ab[cols]], ignore_index=True).astype({"labels": float})
