"""Serving: hash-verified loading, and following current/<SYMBOL> while it is swapped underneath."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from levibot_assets.core.layout import DataLayout
from levibot_assets.core.release import ReleaseError, publish, rollback
from levibot_assets.core.tft import TftConfig, train_tft
from levibot_assets.serving import NoRelease, load_current
from levibot_assets.settings import Settings
from levibot_assets_tests import release_fixtures as rf

D0, D1, D2 = "2025-10-01", "2025-10-02", "2025-10-03"


@pytest.fixture(scope="module")
def models():
    data = rf.split()
    a, b = rf.lgbm(data, rounds=5), rf.lgbm(data, rounds=15, leaves=15)
    row = data.test.iloc[[100]]
    pa, pb = a.predict_proba(row), b.predict_proba(row)
    assert not np.allclose(pa, pb)
    return a, b, row, pa, pb


@pytest.fixture
def layout(tmp_path, models) -> DataLayout:
    layout = DataLayout(tmp_path / "data")
    a, b, *_ = models
    publish(layout, rf.released_decision(D0, rf.SYMBOL, a))
    publish(layout, rf.released_decision(D1, rf.SYMBOL, b))
    return layout


def _tamper(layout: DataLayout, date: str) -> None:
    path = layout.release_dir(date, rf.SYMBOL) / "lgbm.txt"
    path.write_text(path.read_text() + "\n")


def test_load_current_serves_the_release_in_service(layout, models):
    *_, row, pa, pb = models
    served = load_current(rf.SYMBOL, layout.root)
    assert (served.release_date, served.model_type) == (D1, "lgbm")
    np.testing.assert_allclose(served.predict_proba(row), pb)
    rollback(layout, rf.SYMBOL, "previous")
    np.testing.assert_allclose(served.predict_proba(row), pa)  # picked up on the next call, no restart
    assert served.release_date == D0 and served.reloads == 2


def test_nothing_in_service_is_a_clear_error(layout):
    with pytest.raises(NoRelease, match="no release in service for SOLUSDT"):
        load_current("SOLUSDT", layout.root)


def test_tampered_release_is_never_loaded(layout):
    _tamper(layout, D1)
    with pytest.raises(ReleaseError, match="does not match the sha256"):
        load_current(rf.SYMBOL, layout.root)


def test_swap_to_a_tampered_release_keeps_the_good_model(layout, models):
    a, _, row, pa, pb = models
    served = load_current(rf.SYMBOL, layout.root)
    publish(layout, rf.released_decision(D2, rf.SYMBOL, a))
    _tamper(layout, D2)
    np.testing.assert_allclose(served.predict_proba(row), pb)  # still the verified D1 model
    assert "could not load" in served.last_error and served.release_date == D1
    rollback(layout, rf.SYMBOL, D0)
    np.testing.assert_allclose(served.predict_proba(row), pa)
    assert served.last_error is None and served.release_date == D0


def test_loader_keeps_answering_while_the_link_is_swapped_repeatedly(layout, models):
    *_, row, pa, pb = models
    served = load_current(rf.SYMBOL, layout.root)
    done = threading.Event()
    errors: list[BaseException] = []

    def swap() -> None:
        try:
            for i in range(60):
                rollback(layout, rf.SYMBOL, D0 if i % 2 == 0 else D1)
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=swap)
    thread.start()
    answers = 0
    while not done.is_set():
        p = served.predict_proba(row)
        assert np.allclose(p, pa) or np.allclose(p, pb)
        answers += 1
    thread.join()
    assert not errors and answers > 0
    np.testing.assert_allclose(served.predict_proba(row), pb)  # the last swap pointed at D1
    assert served.release_date == D1 and served.reloads >= 2
    assert served.last_error is None


def test_default_data_dir_comes_from_the_settings(layout, levibot_env, models):
    *_, row, _, pb = models
    levibot_env(data_dir=str(layout.root))
    served = load_current(rf.SYMBOL)
    assert served.layout.root == layout.root
    np.testing.assert_allclose(served.predict_proba(row), pb)


@pytest.mark.slow
def test_a_tft_release_round_trips_through_the_verified_loader(tmp_path):
    data = rf.split()
    tiny = TftConfig(max_epochs=1, batch_size=64, batches_per_epoch=2, validation_stride=4, hidden_size=8,
                     attention_head_size=1, hidden_continuous_size=4)
    model = train_tft(data.history, Settings(threads=1), config=tiny)
    layout = DataLayout(tmp_path / "data")
    publish(layout, rf.released_decision(D0, rf.SYMBOL, model))
    assert os.readlink(layout.best_link("tft", ".ckpt")) == f"releases/{D0}/{rf.SYMBOL}/tft.ckpt"
    served = load_current(rf.SYMBOL, layout.root)
    np.testing.assert_allclose(served.predict_proba(data.context), model.predict_proba(data.context), equal_nan=True)
    checkpoint = layout.release_dir(D0, rf.SYMBOL) / "tft.ckpt"
    checkpoint.write_bytes(checkpoint.read_bytes() + b"\0")
    with pytest.raises(ReleaseError, match="tft.ckpt does not match the sha256"):
        load_current(rf.SYMBOL, layout.root)
