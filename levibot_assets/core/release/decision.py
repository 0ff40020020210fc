"""The champion/challenger rule and its record: score everything on the same rows, promote only what has earned it.

The challenger is the better candidate (lgbm, tft, logistic) by LEVIBOT_SELECT_METRIC (lower is
better for log_loss and brier). It is released only if it beats the best baseline and, when a model
is in service (the champion), beats the champion by more than LEVIBOT_PROMOTE_MARGIN, every score
coming from one core.evaluation run on identical test-day rows (the day the champion never saw).

The baselines of the rule are those that are not candidates (core.baselines.rule_baselines): with
logistic regression a candidate, the rule's baselines are majority and last_return_sign, so no
candidate is ever required to beat itself.

What was decided is a ReleaseDecision; carrying it out (writing the release, swapping what is in
service, recording it) is release.deploy.publish, which needs only the record, never the rule.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from levibot_assets.core.baselines import rule_baselines
from levibot_assets.core.dataset import TrainTest, align_to_rows
from levibot_assets.core.evaluation import Evaluation, Scoring, evaluate_models
from levibot_assets.core.layout import date_str
from levibot_assets.core.metrics import higher_is_better
from levibot_assets.core.model_api import Classifier, TrainedModel
from levibot_assets.core.release.store import ReleaseError, jsonable

# champion_id of a decision made with nothing in service; deploy.in_service_id says the same when
# no current/<SYMBOL> link exists, so the re-check under the symbol lock compares like with like.
NOTHING_IN_SERVICE = "none"
# The champion's name among the scored models of an evaluation.
CHAMPION = "champion"


# ----------------------------------------------------------------------------- scores and the decision record


def is_score(x: Any) -> bool:
    return isinstance(x, (int, float, np.floating, np.integer)) and math.isfinite(float(x))


def beats(a: Any, b: Any, metric: str, margin: float = 0.0) -> bool:
    """Whether score `a` is better than `b` by more than `margin` (a non-finite `a` never beats)."""
    if not is_score(a):
        return False
    if not is_score(b):
        return True
    return float(a) > float(b) + margin if higher_is_better(metric) else float(a) < float(b) - margin


@dataclass
class ReleaseDecision:
    """What best_release decided for one (date, symbol); `model` is what gets written when released."""

    date: str
    symbol: str
    released: bool
    reason: str
    select_metric: str
    challenger_type: str | None
    scores: dict = field(default_factory=dict)  # challenger, champion, best_baseline (+ its name)
    metrics: dict = field(default_factory=dict)  # candidates, champion, baselines: full score dicts
    champion_release: str | None = None
    # in_service_id when the decision was scored; None for a decision not scored against the release
    # in service (made by hand: tests, benchmarks), which publish deploys without the re-check.
    champion_id: str | None = None
    trained_on: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    test_rows: int | None = None
    model: Classifier | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "model"}
        data["higher_is_better"] = higher_is_better(self.select_metric)
        return jsonable(data)

    @classmethod
    def from_json(cls, data: dict) -> "ReleaseDecision":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "model"}
        return cls(**known)


# ----------------------------------------------------------------------------- the rule


def best_of(scores: dict[str, Any], metric: str) -> tuple[str | None, float | None]:
    finite = {k: float(v) for k, v in scores.items() if is_score(v)}
    if not finite:
        return None, None
    pick = max if higher_is_better(metric) else min
    name = pick(finite, key=finite.__getitem__)
    return name, finite[name]


@dataclass
class Champion:
    """The release in service for the symbol, scored on this partition's test rows.

    `release_id` (store.release_id of the manifest that was loaded, or deploy.in_service_id when it
    could not be) lets publish check under its lock that this is still the release in service.
    """

    release_date: str
    model_type: str
    release_id: str
    metrics: dict | None = None  # None when it could not be scored (see error)
    error: str | None = None


def _fmt(x: Any) -> str:
    return f"{float(x):.4f}" if is_score(x) else "n/a"


def decide(
    date: dt.date | str,
    symbol: str,
    candidates: dict[str, TrainedModel],
    evaluation: Evaluation,
    champion: Champion | None,
    select_metric: str,
    promote_margin: float = 0.0,
    trained_on: list[str] | None = None,
) -> ReleaseDecision:
    """Promote the better candidate only if it beats the best baseline and the champion by the margin.

    Every score comes from one `evaluation` (core.evaluation) of candidates, champion and baselines
    on identical test rows; the champion's scores are also in `champion.metrics`.
    """
    date = date_str(date)
    m = select_metric
    candidate_scores = {t: evaluation.scores[t] for t in candidates}
    baselines = {b: evaluation.scores[b] for b in evaluation.baselines}
    challenger_type, challenger_score = best_of({t: s.get(m) for t, s in candidate_scores.items()}, m)
    baseline_name, baseline_score = best_of({n: s.get(m) for n, s in baselines.items()}, m)
    champion_score = (champion.metrics or {}).get(m) if champion else None
    common = dict(
        date=date,
        symbol=symbol,
        select_metric=m,
        challenger_type=challenger_type,
        scores={
            "challenger": challenger_score,
            "champion": champion_score,
            "best_baseline": baseline_score,
            "best_baseline_name": baseline_name,
        },
        metrics={"candidates": candidate_scores, "champion": champion.metrics if champion else None, "baselines": baselines},
        champion_release=champion.release_date if champion else None,
        champion_id=champion.release_id if champion else NOTHING_IN_SERVICE,
        trained_on=list(trained_on or []),
        test_rows=int(evaluation.facts["n_test_rows"]),
    )
    keep = f"champion {champion.release_date} stays in service" if champion else "nothing is in service for this symbol"
    if challenger_type is None:
        return ReleaseDecision(released=False, reason=f"no candidate has a finite {m}: nothing released; {keep}", **common)
    trained = candidates[challenger_type]
    challenger = f"{challenger_type} {m}={_fmt(challenger_score)}"
    if not beats(challenger_score, baseline_score, m):
        reason = f"{challenger} does not beat the best baseline {baseline_name} {m}={_fmt(baseline_score)}: nothing released; {keep}"
        return ReleaseDecision(released=False, reason=reason, **common)
    baseline_part = f"beats the best baseline {baseline_name} {m}={_fmt(baseline_score)}"
    if champion is None:
        reason = f"first release for {symbol}: {challenger} {baseline_part}"
    elif champion.metrics is None or not is_score(champion_score):
        reason = f"champion {champion.release_date} could not be scored ({champion.error or 'no score'}); {challenger} {baseline_part}"
    elif beats(challenger_score, champion_score, m, promote_margin):
        reason = (
            f"{challenger} beats champion {champion.release_date} ({champion.model_type}) {m}={_fmt(champion_score)} "
            f"by more than the margin {promote_margin:g} on the same {common['test_rows']} rows and {baseline_part}"
        )
    else:
        reason = (
            f"{challenger} does not beat champion {champion.release_date} ({champion.model_type}) "
            f"{m}={_fmt(champion_score)} by more than the margin {promote_margin:g} on the same "
            f"{common['test_rows']} rows: {keep}"
        )
        return ReleaseDecision(released=False, reason=reason, **common)
    params = trained.metrics.get("best_params") or trained.metrics.get("params") or {}
    return ReleaseDecision(released=True, reason=reason, params=dict(params), model=trained.model, **common)


def evaluate_with_champion(
    split: TrainTest,
    candidates: dict[str, Classifier],
    champion: Classifier | None,
    scoring: Scoring,
) -> tuple[Evaluation, str | None]:
    """Score candidates, champion and baselines together on the test rows (core.evaluation).

    Each model predicts on `split.context` (last training day + test day) so models needing history
    get it; probabilities are picked out for the test rows by timestamp, and for the training rows
    (the calibration rows of the trading rule's thresholds). A champion that fails to predict is
    left out (the error is returned) rather than blocking the release. Baselines that are also
    candidates are left out of the baselines (rule_baselines).
    """
    baselines = rule_baselines(candidates)

    def on_test_and_train(model: Classifier) -> tuple[np.ndarray, np.ndarray]:
        p = model.predict_proba(split.context)
        return align_to_rows(split.context, p, split.test), align_to_rows(split.context, p, split.train)

    probas, calibration = {}, {}
    for name, model in candidates.items():
        probas[name], calibration[name] = on_test_and_train(model)
    champion_error = None
    if champion is not None:
        try:
            p, c = on_test_and_train(champion)
            if not np.isfinite(p).any():
                raise ReleaseError("no finite probability for any test row")
            evaluation = evaluate_models(split.test, {**probas, CHAMPION: p}, split.train, scoring, baselines,
                                         calibration={**calibration, CHAMPION: c})
            return evaluation, None
        except Exception as exc:  # a broken champion must not block a good challenger
            champion_error = f"{type(exc).__name__}: {exc}"
    return evaluate_models(split.test, probas, split.train, scoring, baselines, calibration=calibration), champion_error
