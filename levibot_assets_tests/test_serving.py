"""Serving: hash-verified loading, and following current/<SYMBOL> while it is swapped underneath."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from levibot_assets.core.layout import DataLayout
from levibot_assets.core.release.deploy import in_service_id, publish, rollback
from levibot_assets.core.release.store import ReleaseError, release_id
from levibot_assets.core.tft import TftConfig, train_tft
from levibot_assets.serving import NoRelease, load_current
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


@pytest.mark.parametrize("data_root", ["local", "s3"], indirect=True)
def test_a_re_release_of_the_date_in_service_reaches_a_running_loader(data_root, models):
    """Re-running best_release for the date in service replaces its release under an unchanged link."""
    a, b, row, pa, pb = models
    layout = DataLayout(data_root)
    publish(layout, rf.released_decision(D0, rf.SYMBOL, a))
    served = load_current(rf.SYMBOL, data_root, refresh_s=0)
    np.testing.assert_allclose(served.predict_proba(row), pa)
    publish(layout, rf.released_decision(D0, rf.SYMBOL, b, champion_id=in_service_id(layout, rf.SYMBOL)))
    np.testing.assert_allclose(served.predict_proba(row), pb)  # same link, new release: reloaded
    assert served.release_date == D0 and served.reloads == 2
    assert release_id(served.manifest) == in_service_id(layout, rf.SYMBOL)


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
    model = train_tft(data.history, horizon=15, max_minutes=5.0, threads=1, config=tiny)
    layout = DataLayout(tmp_path / "data")
    publish(layout, rf.released_decision(D0, rf.SYMBOL, model))
    assert os.readlink(layout.best_link("tft", ".ckpt")) == f"releases/{D0}/{rf.SYMBOL}/tft.ckpt"
    served = load_current(rf.SYMBOL, layout.root)
    np.testing.assert_allclose(served.predict_proba(data.context), model.predict_proba(data.context), equal_nan=True)
    checkpoint = layout.release_dir(D0, rf.SYMBOL) / "tft.ckpt"
    checkpoint.write_bytes(checkpoint.read_bytes() + b"\0")
    with pytest.raises(ReleaseError, match="tft.ckpt does not match the sha256"):
        load_current(rf.SYMBOL, layout.root)


# --- one-row predictions: mapping / 1-D array in FEATURE_COLUMNS order -> float ---

from levibot_assets.core.features import FEATURE_COLUMNS  # noqa: E402
from levibot_assets.serving import FeatureInputError  # noqa: E402


def _rows(models):
    *_, row, _, _ = models
    data = rf.split()
    return data.test.iloc[:200]


def test_one_row_inputs_give_the_batch_probability_exactly(layout, models):
    frame = _rows(models).copy()
    frame.iloc[3, frame.columns.get_loc("rsi_14")] = np.nan  # NaN = missing, as in the batch path
    served = load_current(rf.SYMBOL, layout.root)
    batch = served.predict_proba(frame)
    matrix = frame[FEATURE_COLUMNS].to_numpy(dtype="float64")
    for i in range(len(frame)):
        as_dict = dict(zip(FEATURE_COLUMNS, matrix[i].tolist()))
        answers = [served.predict_proba(as_dict), served.predict_proba(matrix[i]),
                   served.predict_proba(list(matrix[i])), served.predict_proba(frame.iloc[i])]
        assert all(type(a) is float for a in answers)
        assert all(a == batch[i] for a in answers), (i, answers, batch[i])
    np.testing.assert_array_equal(served.predict_proba(matrix), batch)  # 2-D array: a batch


def test_one_row_follows_a_symlink_swap(layout, models):
    *_, row, pa, pb = models
    values = dict(zip(FEATURE_COLUMNS, row[FEATURE_COLUMNS].to_numpy(dtype="float64")[0].tolist()))
    served = load_current(rf.SYMBOL, layout.root)
    assert served.predict_proba(values) == pb[0]
    rollback(layout, rf.SYMBOL, "previous")
    assert served.predict_proba(values) == pa[0] and served.release_date == D0


def test_extra_keys_and_other_numeric_types_are_accepted(layout, models):
    *_, row, _, pb = models
    vector = row[FEATURE_COLUMNS].to_numpy(dtype="float64")[0]
    served = load_current(rf.SYMBOL, layout.root)
    mapping = {"timestamp": "2025-10-04T00:00Z", "close": 1.0, **dict(zip(FEATURE_COLUMNS, vector.tolist()))}
    assert served.predict_proba(mapping) == pb[0]
    assert served.predict_proba(tuple(np.float64(v) for v in vector)) == pb[0]
    assert served.predict_proba(vector[::-1].copy()[::-1]) == pb[0]  # non-contiguous view


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda v: {k: x for k, x in zip(FEATURE_COLUMNS, v) if k != "macd"}, r"missing feature\(s\) \['macd'\]"),
        (lambda v: {}, r"missing feature\(s\) \['ret_1', 'ret_5'"),
        (lambda v: v[:-1], r"expected 15 values in FEATURE_COLUMNS order .* got 14"),
        (lambda v: np.append(v, 1.0), r"expected 15 values .* got 16"),
        (lambda v: list(v) + [1.0], r"expected 15 values .* got 16"),
        (lambda v: {**dict(zip(FEATURE_COLUMNS, v)), "rsi_14": None}, r"feature 'rsi_14' is None: values must be real numbers"),
        (lambda v: {**dict(zip(FEATURE_COLUMNS, v)), "ret_5": "0.1"}, r"feature 'ret_5' is '0.1'"),
        (lambda v: np.array(["x"] * 15, dtype=object), r"feature 'ret_1' is 'x'"),
        (lambda v: np.zeros((2, 3)), r"got an array of shape \(2, 3\)"),
        (lambda v: "ret_1=0.1", r"not str"),
    ],
)
def test_bad_one_row_inputs_are_clear_errors(layout, models, make, message):
    *_, row, _, _ = models
    served = load_current(rf.SYMBOL, layout.root)
    with pytest.raises(FeatureInputError, match=message):
        served.predict_proba(make(row[FEATURE_COLUMNS].to_numpy(dtype="float64")[0]))


def test_a_frame_without_a_feature_column_is_a_clear_error(layout, models):
    *_, row, _, _ = models
    served = load_current(rf.SYMBOL, layout.root)
    with pytest.raises(FeatureInputError, match=r"missing feature\(s\) \['volume_rel_30'\]"):
        served.predict_proba(row.drop(columns=["volume_rel_30"]))


def test_one_row_needs_a_lightgbm_release(layout, models):
    *_, row, _, _ = models
    served = load_current(rf.SYMBOL, layout.root)

    class Tft:
        model_type = "tft"

    served.model = Tft()  # stands in for a loaded TFT (the slow test round-trips a real one)
    with pytest.raises(FeatureInputError, match="tft release of BTCUSDT scores DataFrames with their context rows only"):
        served.predict_proba(dict(zip(FEATURE_COLUMNS, [0.0] * 15)))


def test_one_row_predictions_from_many_threads(layout, models):
    frame = _rows(models)
    served = load_current(rf.SYMBOL, layout.root)
    batch = served.predict_proba(frame)
    matrix = frame[FEATURE_COLUMNS].to_numpy(dtype="float64")
    wrong: list[int] = []

    def score(offset: int) -> None:
        for _ in range(5):
            for i in range(offset, len(matrix), 4):
                if served.predict_proba(matrix[i]) != batch[i]:
                    wrong.append(i)

    threads = [threading.Thread(target=score, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong
