"""The champion/challenger rule and its record: decide on a multi-day record, promote only on a paired win.

The candidates (lgbm, tft, logistic, ensemble: core.model_api.MODEL_FAMILIES) are scored with the
champion and the baselines on identical test-day rows (core.evaluation). The decision then looks
past the day (core.release.evidence): the challenger is the family with the best record over the
last LEVIBOT_RECORD_DAYS stored days (today included; lower is better for log_loss and brier;
Sharpe is judged on AUC there). It is released only if its record beats the best baseline's on
the same rows and, when a model is in service (the champion), if its advantage over the champion
on the champion's own out-of-sample rows has a paired block-bootstrap confidence interval
(LEVIBOT_PROMOTE_CONFIDENCE) lying entirely above LEVIBOT_PROMOTE_MARGIN. One day's AUC has a
standard error near 0.015: a rule on one day's point scores promotes on noise.

The baselines of the rule are those that are not candidates (core.baselines.rule_baselines): with
logistic regression a candidate, the rule's baselines are majority and last_return_sign, so no
candidate is ever required to beat itself.

What was decided is a ReleaseDecision (its `evidence` holds the records, the difference and its
interval); carrying it out (writing the release, swapping what is in service, recording it) is
release.deploy.publish, which needs only the record, never the rule.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from levibot_assets.core.baselines import rule_baselines
from levibot_assets.core.dataset import TrainTest, align_to_rows
from levibot_assets.core.evaluation import Evaluation, Scoring, evaluate_models
from levibot_assets.core.layout import date_str
from levibot_assets.core.metrics import higher_is_better
from levibot_assets.core.model_api import Classifier, TrainedModel, preferred_type
from levibot_assets.core.predictions import predictions_frame
from levibot_assets.core.release.evidence import gather_evidence, record_metric
from levibot_assets.core.records import jsonable
from levibot_assets.core.release.store import ReleaseError

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
    evidence: dict = field(default_factory=dict)  # core.release.evidence: records and the paired comparison
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

    @property
    def scored_release(self) -> str | None:
        """The release date, when the champion was scored on the test rows (its rows are "champion" rows)."""
        return self.release_date if self.metrics is not None else None


def _fmt(x: Any) -> str:
    return f"{float(x):.4f}" if is_score(x) else "n/a"


@dataclass(frozen=True)
class DecisionPolicy:
    """The knobs of the rule (LEVIBOT_SELECT_METRIC, _PROMOTE_MARGIN, _RECORD_DAYS, _PROMOTE_CONFIDENCE)."""

    select_metric: str = "auc"
    promote_margin: float = 0.0
    record_days: int = 5
    confidence: float = 0.9


def decide(
    date: dt.date | str,
    symbol: str,
    candidates: dict[str, TrainedModel],
    evaluation: Evaluation,
    champion: Champion | None,
    policy: DecisionPolicy,
    trained_on: list[str] | None = None,
    history: dict[str, pd.DataFrame] | None = None,
    today: pd.DataFrame | None = None,
) -> ReleaseDecision:
    """Choose the challenger on the families' record, promote it only on a paired win over the champion.

    `history` holds the stored predictions of the trailing days before `date` ({day: table},
    core.predictions); today's rows come from `evaluation` (candidates, champion and baselines
    scored on identical rows), as the predictions table `today` when the caller built it to store. The record covers the last `policy.record_days` days, today
    included (core.release.evidence). The challenger (the family with the best record) is released
    when its record beats the best baseline's record on the same rows and, with a model in service,
    when its advantage over the champion on the champion's own out-of-sample rows has a confidence
    interval (level `policy.confidence`) entirely above `policy.promote_margin`.
    """
    date = date_str(date)
    m = policy.select_metric
    record_m = record_metric(m)
    candidate_scores = {t: evaluation.scores[t] for t in candidates}
    baselines = {b: evaluation.scores[b] for b in evaluation.baselines}
    baseline_name, baseline_score = best_of({n: s.get(m) for n, s in baselines.items()}, m)
    champion_score = (champion.metrics or {}).get(m) if champion else None
    scored_release = champion.scored_release if champion is not None else None
    frames = dict(sorted((history or {}).items())[-(policy.record_days - 1):]) if policy.record_days > 1 else {}
    frames[date] = predictions_frame(evaluation, scored_release) if today is None else today
    evidence = gather_evidence(frames, list(candidates), record_m, policy.confidence, scored_release, preferred_type())
    challenger_type = evidence.challenger
    common = dict(
        date=date,
        symbol=symbol,
        select_metric=m,
        challenger_type=challenger_type,
        scores={
            "challenger": candidate_scores[challenger_type].get(m) if challenger_type else None,
            "champion": champion_score,
            "best_baseline": baseline_score,
            "best_baseline_name": baseline_name,
        },
        metrics={"candidates": candidate_scores, "champion": champion.metrics if champion else None, "baselines": baselines},
        evidence=evidence.as_dict(),
        champion_release=champion.release_date if champion else None,
        champion_id=champion.release_id if champion else NOTHING_IN_SERVICE,
        trained_on=list(trained_on or []),
        test_rows=int(evaluation.facts["n_test_rows"]),
    )
    keep = f"champion {champion.release_date} stays in service" if champion else "nothing is in service for this symbol"
    if challenger_type is None:
        return ReleaseDecision(released=False, reason=f"no candidate has a finite {record_m} record: nothing released; {keep}", **common)
    n_days = len(evidence.days)
    record = f"{challenger_type} {record_m}={_fmt(evidence.records[challenger_type])} over {n_days} day(s), {evidence.rows} rows"
    if (lead := evidence.versus_preferred) is not None and lead.advantage is not None:
        kept = challenger_type != lead.challenger
        record += (
            f" ({lead.challenger}'s record {'leads' if lead.advantage > 0 else 'trails'} by {lead.advantage:+.4f}, "
            f"{lead.confidence:.0%} CI [{lead.ci_low:+.4f}, {lead.ci_high:+.4f}]: "
            + (f"not beyond noise, so {challenger_type} stays the challenger)" if kept else "beyond noise)")
        )
    best_b, best_b_score = best_of(evidence.baselines, record_m)
    if not beats(evidence.records[challenger_type], best_b_score, record_m):
        reason = f"{record} does not beat the best baseline {best_b} {record_m}={_fmt(best_b_score)} on them: nothing released; {keep}"
        return ReleaseDecision(released=False, reason=reason, **common)
    baseline_part = f"beats the best baseline {best_b} {record_m}={_fmt(best_b_score)}"
    comparison = evidence.comparison
    if champion is None:
        reason = f"first release for {symbol}: {record} {baseline_part}"
    elif champion.metrics is None or not is_score(champion_score) or comparison is None or comparison.advantage is None:
        reason = f"champion {champion.release_date} could not be scored ({champion.error or 'no score'}); {record} {baseline_part}"
    else:
        versus = (
            f"{challenger_type} vs champion {champion.release_date} ({champion.model_type}) on the champion's "
            f"{comparison.rows} rows of {len(comparison.days)} day(s): {record_m} {_fmt(comparison.challenger_score)} vs "
            f"{_fmt(comparison.champion_score)}, advantage {comparison.advantage:+.4f}, {comparison.confidence:.0%} CI "
            f"[{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}]"
        )
        if not comparison.holds_up(policy.promote_margin):
            reason = f"{versus} does not lie above the margin {policy.promote_margin:g}: {keep} ({record})"
            return ReleaseDecision(released=False, reason=reason, **common)
        reason = f"{versus} lies above the margin {policy.promote_margin:g}; {record} {baseline_part}"
    trained = candidates[challenger_type]
    return ReleaseDecision(released=True, reason=reason, params=trained.params, model=trained.model, **common)


def candidate_probabilities(split: TrainTest, candidates: dict[str, Classifier]) -> tuple[dict, dict]:
    """Each candidate's P(up) on the test rows and on the training rows (the trading rule's calibration
    rows), from one prediction on `split.context`; an ensemble combines its members' arrays."""
    probas: dict[str, np.ndarray] = {}
    calibration: dict[str, np.ndarray] = {}
    for name, model in candidates.items():
        members = getattr(model, "members", None)
        if members and all(members[m] is candidates.get(m) for m in members):
            probas[name] = model.combine({m: probas[m] for m in members})
            calibration[name] = model.combine({m: calibration[m] for m in members})
        else:
            p = model.predict_proba(split.context)
            probas[name] = align_to_rows(split.context, p, split.test)
            calibration[name] = align_to_rows(split.context, p, split.train)
    return probas, calibration


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
    probas, calibration = candidate_probabilities(split, candidates)
    champion_error = None
    if champion is not None:
        try:
            on_context = champion.predict_proba(split.context)
            p, c = (align_to_rows(split.context, on_context, rows) for rows in (split.test, split.train))
            if not np.isfinite(p).any():
                raise ReleaseError("no finite probability for any test row")
            evaluation = evaluate_models(split.test, {**probas, CHAMPION: p}, split.train, scoring, baselines,
                                         calibration={**calibration, CHAMPION: c})
            return evaluation, None
        except Exception as exc:  # a broken champion must not block a good challenger
            champion_error = f"{type(exc).__name__}: {exc}"
    return evaluate_models(split.test, probas, split.train, scoring, baselines, calibration=calibration), champion_error
