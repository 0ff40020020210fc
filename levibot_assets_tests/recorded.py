"""What best_release recorded, read back by tests and benchmarks (the pipeline itself never reads it back):
the decision of a (date, symbol) and the AUC of every model a predictions table implies."""
from __future__ import annotations

import datetime as dt

import pandas as pd

from levibot_assets.core.layout import DataLayout, date_str
from levibot_assets.core.metrics import roc_auc
from levibot_assets.core.release.decision import ReleaseDecision
from levibot_assets.core.release.deploy import read_summary
from levibot_assets.core.release.store import MANIFEST, ReleaseError, read_manifest


def load_decision(layout: DataLayout, date: dt.date | str, symbol: str) -> ReleaseDecision:
    """The latest decision recorded for a (date, symbol) in summary.json.

    If a crash came between the link swap and the summary update, the released manifest has it.
    """
    date = date_str(date)
    entry = read_summary(layout, date).get("symbols", {}).get(symbol)
    if entry is not None:
        return ReleaseDecision.from_json(entry)
    release_dir = layout.release_dir(date, symbol)
    if (release_dir / MANIFEST).exists():
        return ReleaseDecision.from_json(read_manifest(release_dir)["decision"])
    raise ReleaseError(f"no release decision recorded for {date}|{symbol}: materialize best_release for it first")


def scores_from_predictions(frame: pd.DataFrame) -> dict[str, float]:
    """{model: AUC over its scored rows}, recomputed from a predictions table alone."""
    out = {}
    for name, rows in frame.loc[frame["scored"].astype(bool)].groupby("model", sort=False):
        out[str(name)] = roc_auc(rows["label"].to_numpy(), rows["p_up"].to_numpy())
    return out
