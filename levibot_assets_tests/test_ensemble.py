"""The ensemble family: the average of the candidates, released with its members' files and served hot."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from levibot_assets.core.baselines import fit_logistic_candidate
from levibot_assets.core.ensemble import EnsembleClassifier, fit_ensemble
from levibot_assets.core.layout import DataLayout
from levibot_assets.core.model_api import TrainedModel, fit_in_release, release_fitted_types
from levibot_assets.core.release.deploy import publish
from levibot_assets.core.release.store import load_release, read_manifest
from levibot_assets.serving import load_current
from levibot_assets_tests import release_fixtures as rf
from levibot_assets_tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def members():
    data = rf.split()
    return data, {"lgbm": TrainedModel(rf.lgbm(data)), "logistic": fit_logistic_candidate(data, rf.HORIZON)}


def test_the_ensemble_is_the_average_of_its_members(members):
    data, candidates = members
    ensemble = fit_ensemble(data, rf.HORIZON, candidates).model
    expected = np.mean([m.model.predict_proba(data.test) for m in candidates.values()], axis=0)
    np.testing.assert_allclose(ensemble.predict_proba(data.test), expected)
    assert fit_ensemble(data, rf.HORIZON, candidates).metrics["params"] == {"members": ["lgbm", "logistic"]}
    with pytest.raises(ValueError, match="at least two members"):
        EnsembleClassifier({"lgbm": candidates["lgbm"].model})


def test_best_release_fits_the_logistic_then_the_ensemble_of_all():
    assert release_fitted_types() == ["logistic", "ensemble"]
    data = rf.split()
    candidates = {"lgbm": TrainedModel(rf.lgbm(data))}
    for model_type in release_fitted_types():
        candidates[model_type] = fit_in_release(model_type, data, rf.HORIZON, candidates)
    assert list(candidates["ensemble"].model.members) == ["lgbm", "logistic"]


def test_an_ensemble_release_holds_its_members_files_and_is_served(tmp_path, members):
    data, candidates = members
    ensemble = fit_ensemble(data, rf.HORIZON, candidates).model
    layout = DataLayout(tmp_path / "data")
    publish(layout, rf.released_decision(rf.TEST_DATE, rf.SYMBOL, ensemble))
    release_dir = layout.release_dir(rf.TEST_DATE, rf.SYMBOL)
    manifest = read_manifest(release_dir)
    assert manifest["model_type"] == "ensemble"
    assert set(manifest["files"]) == {"lgbm.txt", "logistic.json", "ensemble.json"}
    loaded, _ = load_release(release_dir)
    np.testing.assert_allclose(loaded.predict_proba(data.test), ensemble.predict_proba(data.test))
    served = load_current(rf.SYMBOL, layout.root)
    assert served.model_type == "ensemble"
    np.testing.assert_allclose(served.predict_proba(data.test), ensemble.predict_proba(data.test))
    assert (layout.root / "best_ensemble.json").resolve() == (release_dir / "ensemble.json").resolve()
    # loading an ensemble without a TFT member imports neither torch nor pytorch-forecasting
    code = (f"import sys; from levibot_assets.serving import load_current; m = load_current('{rf.SYMBOL}', '{layout.root}'); "
            "print(m.model_type, 'torch' in sys.modules, 'pytorch_forecasting' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert out.stdout.split() == ["ensemble", "False", "False"]


def fit_coin(train, config, progress, study_name):
    """The fit of the test-only family below: a SkillClassifier with no skill."""
    from levibot_assets.core.model_api import Fitted

    return Fitted(model=rf.SkillClassifier(0.0), facts={"params": {"skill": 0.0}})


def test_a_family_is_one_registry_entry(monkeypatch):
    """A new asset-trained family gets its asset, checks, kinds and a place among best_release's
    candidates from its registry entry alone (the ensemble, a release-fitted family, likewise)."""
    import dagster as dg

    from levibot_assets.core.model_api import MODEL_FAMILIES, ModelFamily
    from levibot_assets.definitions import build_definitions
    from levibot_assets_tests.graph import SETTINGS

    rf.register_skill(monkeypatch)
    monkeypatch.setitem(MODEL_FAMILIES, "coin", ModelFamily(
        MODEL_FAMILIES["skill"].class_path, "skill.json", f"{__name__}:fit_coin", libraries=("numpy",)))
    with dg.instance_for_test():  # Dagster resolves definitions against an instance's state storage
        defs = build_definitions(SETTINGS)
        coin = defs.resolve_assets_def("coin_model")
        release = defs.resolve_assets_def("best_release")
    assert {"numpy"} <= set(coin.specs_by_key[dg.AssetKey("coin_model")].kinds)
    assert {key.name for key in coin.check_keys} == {"no_train_test_overlap", "beats_baselines"}
    assert dg.AssetKey("coin_model") in release.asset_deps[dg.AssetKey("best_release")]
