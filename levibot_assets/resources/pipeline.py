"""The pipeline's non-secret knobs as a resource, so assets and the schedule receive them.

Assets used to call get_settings() themselves: what they depended on was hidden from their
signatures, from the UI's resource view and from tests, which had to change the process
environment to change a knob. PipelineConfig is built from the Settings in
definitions.build_resources; a test or a run passes another one. Secrets stay out (resource
config is copied into every run's snapshot); the Optuna storage URL can hold a password, so it
is passed as dg.EnvVar and only its variable's name is stored.
"""
from __future__ import annotations

from typing import Optional

import dagster as dg

from levibot_assets.core.evaluation import Scoring
from levibot_assets.core.model_api import TrainingConfig
from levibot_assets.core.release.decision import DecisionPolicy

OPTUNA_STORAGE_ENV = "LEVIBOT_OPTUNA_STORAGE"


class PipelineConfig(dg.ConfigurableResource):
    """Training, evaluation and release knobs (the LEVIBOT_* variables of the same names)."""

    # No defaults: the defaults are the Settings' (one place); build it with from_settings.
    label_horizon: int
    train_days: int
    optuna_trials: int
    optuna_storage: Optional[str]
    tft_max_minutes: float
    fee_bps: float
    trade_share: float
    select_metric: str
    promote_margin: float
    record_days: int
    promote_confidence: float
    psi_warn: float
    threads: int

    @property
    def scoring(self) -> Scoring:
        """What evaluation needs of these knobs."""
        return Scoring(horizon=self.label_horizon, fee_bps=self.fee_bps, trade_share=self.trade_share)

    @property
    def training(self) -> TrainingConfig:
        """What an asset-trained family's fit needs of these knobs."""
        storage = (self.optuna_storage or "").strip() or None  # the raw variable may carry spaces
        return TrainingConfig(self.label_horizon, self.optuna_trials, storage, self.tft_max_minutes, self.threads)

    @property
    def policy(self) -> DecisionPolicy:
        """What the release decision needs of these knobs."""
        return DecisionPolicy(self.select_metric, self.promote_margin, self.record_days, self.promote_confidence)

    @classmethod
    def from_settings(cls, settings) -> "PipelineConfig":
        """The knobs of `settings` (levibot_assets.settings.Settings)."""
        return cls(
            label_horizon=settings.label_horizon,
            train_days=settings.train_days,
            optuna_trials=settings.optuna_trials,
            # Only when set, because an EnvVar of an unset variable fails resource initialization.
            optuna_storage=dg.EnvVar(OPTUNA_STORAGE_ENV) if settings.optuna_storage else None,
            tft_max_minutes=settings.tft_max_minutes,
            fee_bps=settings.fee_bps,
            trade_share=settings.trade_share,
            select_metric=settings.select_metric,
            promote_margin=settings.promote_margin,
            record_days=settings.record_days,
            promote_confidence=settings.promote_confidence,
            psi_warn=settings.psi_warn,
            threads=settings.threads,
        )
