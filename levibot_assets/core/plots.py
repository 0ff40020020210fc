"""PNG plots of an evaluation: what the trading rule earned vs buy-and-hold, and what the model used.

Rendered off-screen (matplotlib Agg) into bytes; the caller decides where they go. matplotlib is
imported on the first plot: it costs about a second at import, which every step process would pay.
"""
from __future__ import annotations

import io
from typing import Mapping

from levibot_assets.core.evaluation import Evaluation

DPI = 90


def evaluation_png(evaluation: Evaluation, title: str, importance: Mapping[str, float] | None = None) -> bytes:
    """Cumulative net log return of the rule for each model and the best baseline vs buy-and-hold;
    a second panel with the feature importance when the model provides one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if importance else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.2), dpi=DPI, squeeze=False)
    ax = axes[0][0]
    ax.plot(evaluation.buy_and_hold.index, evaluation.buy_and_hold.to_numpy(), color="grey", lw=1, label="buy and hold")
    best, _ = evaluation.best_baseline("auc")
    for name in [*evaluation.models, best]:
        result = evaluation.trading[name]
        label = f"{name} ({result.n_trades} trades)" if name in evaluation.models else f"{name} baseline ({result.n_trades} trades)"
        ax.step(result.slot_start, result.net_returns.cumsum(), where="post", lw=1.5, label=label)
    ax.set_title(f"{title}: cumulative log return after fees")
    ax.axhline(0, color="black", lw=0.5)
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    if importance:
        ranked = sorted(importance.items(), key=lambda kv: kv[1])
        imp_ax = axes[0][1]
        imp_ax.barh([k for k, _ in ranked], [v for _, v in ranked], color="tab:blue")
        imp_ax.set_title("feature importance (total gain)")
        imp_ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
