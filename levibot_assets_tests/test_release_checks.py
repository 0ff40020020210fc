"""best_release's checks when nothing beats the baselines: no release, a failed WARN check."""
import dagster as dg

from levibot_assets.core.layout import DataLayout
from levibot_assets.core.tables import atomic_write_parquet
from levibot_assets.resources.storage import StorageResource
from levibot_assets_tests import release_fixtures as rf


def test_no_release_is_said_clearly_and_fails_a_warn_check(tmp_path, monkeypatch):
    rf.register_skill(monkeypatch)
    for slot in ("lgbm", "tft"):  # both candidates rank worse than a coin: they cannot beat the baselines
        rf.skill_in_slot(monkeypatch, slot)
    layout = DataLayout(tmp_path / "data")
    storage = StorageResource(data_dir=str(layout.root))
    for day, frame in rf.feature_window(days=3).items():
        atomic_write_parquet(layout.table("features", day, rf.SYMBOL), frame)
    model_dir = layout.model_dir(rf.TEST_DATE, rf.SYMBOL)
    rf.SkillClassifier(-3.0).save(model_dir)
    for slot in ("lgbm", "tft"):
        (model_dir / f"{slot}_metrics.json").write_text("{}")
    result = rf.materialize_best_release(storage)
    assert result.success  # a WARN check does not fail the run
    meta = result.asset_materializations_for_node("best_release")[0].metadata
    assert meta["released"].value is False and "baseline" in meta["reason"].value
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    in_service = checks["model_in_service"]
    assert not in_service.passed and in_service.severity == dg.AssetCheckSeverity.WARN
    assert "nothing released and no model in service" in in_service.description
    assert not layout.current_link(rf.SYMBOL).exists() and not layout.release_dir(rf.TEST_DATE, rf.SYMBOL).exists()
