"""PSI against a hand computation and the per-feature drift report."""
import math

import numpy as np
import pandas as pd
import pytest

from levibot_assets.core.drift import EPSILON, bin_edges, feature_drift, psi


def test_psi_matches_hand_computation():
    expected = np.arange(1, 11, dtype=float)  # 1..10
    actual = np.array([1, 2, 3, 4, 5, 5, 5, 5, 9, 10], dtype=float)
    # bins=2: one inner edge at the median 5.5 -> expected shares (0.5, 0.5), actual (0.8, 0.2)
    assert bin_edges(expected, 2).tolist() == [5.5]
    hand = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert psi(expected, actual, bins=2) == pytest.approx(hand, rel=1e-12)


def test_psi_with_an_empty_bin_uses_epsilon():
    expected = np.arange(1, 11, dtype=float)
    actual = np.full(10, 2.0)  # everything below the edge 5.5
    hand = (1 - 0.5) * math.log(1 / 0.5) + (EPSILON - 0.5) * math.log(EPSILON / 0.5)
    assert psi(expected, actual, bins=2) == pytest.approx(hand, rel=1e-12)


def test_same_distribution_is_stable_and_shift_is_large():
    rng = np.random.default_rng(0)
    base = rng.normal(size=20_000)
    assert psi(base, rng.normal(size=5_000)) < 0.01
    assert psi(base, rng.normal(loc=1.0, size=5_000)) > 0.25


def test_non_finite_values_are_ignored_and_empty_gives_nan():
    assert psi([1, 2, 3, np.inf, np.nan], [1, 2, 3]) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(psi([np.nan], [1.0]))


def test_feature_drift_report():
    rng = np.random.default_rng(1)
    train = pd.DataFrame({"a": rng.normal(size=3000), "b": rng.normal(size=3000)})
    test = pd.DataFrame({"a": rng.normal(size=1000), "b": rng.normal(loc=2.0, size=1000)})
    report = feature_drift(train, test, ["a", "b"], threshold=0.25)
    assert set(report.drifted) == {"b"}
    assert report.max_psi == report.psi_by_feature["b"]
    with pytest.raises(ValueError, match="missing"):
        feature_drift(train, test, ["a", "c"], threshold=0.25)
