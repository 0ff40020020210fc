"""The ensemble family: the plain average of the other candidates' P(up), releasable like any family.

Averaging the families' probabilities scored at least as well as the best single family on unseen
real days (docs/models.md), and it needs nothing fitted beyond its members, so it cannot overfit
the training period. A release of it holds every member's own files beside `ensemble.json`, which
names the members; loading it loads each member with that member's own (lazy) loader, so an
ensemble without a TFT never imports torch. A row gets a probability only where every member has
one (a TFT member without enough context rows leaves the row NaN, as the TFT alone would).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np

from levibot_assets.core.atomic import atomic_write_text
from levibot_assets.core.model_api import MODEL_FAMILIES, Classifier, TrainedModel, model_class, read_model_json

ENSEMBLE_FILE = MODEL_FAMILIES["ensemble"].main_file
ENSEMBLE_FORMAT = 1


class EnsembleClassifier:
    """P(up) = mean of the members' P(up); `members` maps model type -> trained member."""

    model_type = "ensemble"

    def __init__(self, members: Mapping[str, Classifier]):
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two members, got {sorted(members)}")
        if "ensemble" in members:
            raise ValueError("an ensemble cannot be a member of an ensemble")
        self.members = dict(members)
        # rows of history the members need before a row they score (a TFT's encoder length)
        self.context_rows = max(getattr(member, "context_rows", 0) for member in self.members.values())

    def combine(self, probas: Mapping[str, np.ndarray]) -> np.ndarray:
        """The ensemble's P(up) from its members' P(up) on the same rows (computed once by the caller)."""
        return np.vstack([np.asarray(probas[name], dtype="float64") for name in self.members]).mean(axis=0)

    def predict_proba(self, frame) -> np.ndarray:
        return self.combine({name: member.predict_proba(frame) for name, member in self.members.items()})

    def save(self, directory: Path) -> list[Path]:
        written: list[Path] = []
        for member in self.members.values():
            written += [Path(p) for p in member.save(directory)]
        names = [p.name for p in written]
        if len(set(names)) != len(names) or ENSEMBLE_FILE in names:
            raise ValueError(f"ensemble members write clashing files: {sorted(names)}")
        info = {"format": ENSEMBLE_FORMAT, "model_type": self.model_type, "members": list(self.members)}
        written.append(atomic_write_text(Path(directory) / ENSEMBLE_FILE, json.dumps(info, indent=1) + "\n"))
        return written

    @classmethod
    def load(cls, directory: Path) -> "EnsembleClassifier":
        info = read_model_json(Path(directory) / ENSEMBLE_FILE, ENSEMBLE_FORMAT, cls.model_type, "an ensemble")
        return cls({name: model_class(name).load(directory) for name in info["members"]})


def fit_ensemble(split, horizon: int, candidates: Mapping[str, TrainedModel]) -> TrainedModel:
    """The average of every other candidate of the partition: nothing is fitted, nothing is tuned."""
    members = {name: trained.model for name, trained in candidates.items() if name != "ensemble"}
    return TrainedModel(model=EnsembleClassifier(members), metrics={"params": {"members": list(members)}})
