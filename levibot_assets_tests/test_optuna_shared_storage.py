"""Scale-out of tuning: processes sharing one Optuna study per (date, symbol) in PostgreSQL.

LEVIBOT_OPTUNA_STORAGE points every run worker at one database; core.lgbm.tune joins the study
named for the partition. Here two worker processes tune the same study at once on a real
PostgreSQL server; the study then holds the trials of both (as many as they ran together), and a
third caller that finds the study complete runs no trial and refits the study's best trial.
Synthetic candles: plumbing only, no claim about model quality.
"""
from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import time

import optuna
import pandas as pd
import pytest

from levibot_assets.core.dataset import split_window
from levibot_assets.core.features import compute_features
from levibot_assets.core.lgbm import fit_lgbm, train_lgbm, tune
from levibot_assets.core.sources.synthetic import synthetic_day
from levibot_assets_tests.postgres import postgres_server  # noqa: F401  (fixture)

TEST_DATE = dt.date(2025, 10, 13)
SYMBOL = "BTCUSDT"
STUDY = f"lgbm-{TEST_DATE}-{SYMBOL}"
TOTAL_TRIALS = 6
WORKERS = 2
HORIZON, THREADS = 15, 1
WORKER_TIMEOUT_S = 240


def _train_rows() -> pd.DataFrame:
    """Two synthetic training days before TEST_DATE (each with its previous day as warm-up)."""
    days = [TEST_DATE - dt.timedelta(days=i) for i in (3, 2, 1, 0)]
    bars = {d: synthetic_day(SYMBOL, d) for d in days}
    window = {
        d.isoformat(): compute_features(pd.concat([bars[d - dt.timedelta(days=1)], bars[d]]), d, HORIZON)
        for d in days[1:]
    }
    return split_window(window, TEST_DATE, HORIZON).train


def _tune_worker(train: pd.DataFrame, storage: str, barrier, results) -> None:
    """One run worker: wait for the other, then tune the shared study; report the trials it ran."""
    ran: list[str] = []  # tune calls progress once per trial finished by THIS process
    barrier.wait(timeout=WORKER_TIMEOUT_S)
    tune(train, horizon=HORIZON, threads=THREADS, storage=storage, study_name=STUDY, n_trials=TOTAL_TRIALS, progress=ran.append)
    results.put((os.getpid(), len(ran)))


def test_two_processes_share_one_study_and_the_refit_takes_its_best_trial(postgres_server):  # noqa: F811
    storage = postgres_server.url(postgres_server.create_database("optuna"))
    # Optuna creates its tables on first use, and two processes doing so at once on an empty
    # database collide (duplicate "studydirection" type): create the schema once before the
    # workers start, as Optuna's maintainers advise (optuna/optuna#1092). The deployment does the
    # same once (README.md, Deployment).
    optuna.storages.RDBStorage(storage).engine.dispose()
    train = _train_rows()

    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding threads/sockets
    barrier, results = ctx.Barrier(WORKERS), ctx.Queue()
    workers = [ctx.Process(target=_tune_worker, args=(train, storage, barrier, results)) for _ in range(WORKERS)]
    try:
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + WORKER_TIMEOUT_S
        for worker in workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        assert [w.exitcode for w in workers] == [0] * WORKERS, "a worker failed or timed out (see its traceback above)"
        reports = dict(results.get(timeout=10) for _ in workers)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
                worker.join()

    study = optuna.load_study(study_name=STUDY, storage=storage)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert set(reports) == {w.pid for w in workers}
    assert all(count >= 1 for count in reports.values()), f"each worker ran trials of the one study: {reports}"
    assert len(finished) == sum(reports.values()) >= TOTAL_TRIALS  # one study holds the trials of both

    refit = train_lgbm(train, horizon=HORIZON, n_trials=TOTAL_TRIALS, threads=THREADS, storage=storage, study_name=STUDY)
    assert len(optuna.load_study(study_name=STUDY, storage=storage).trials) == len(study.trials), "no extra trial"
    assert refit.tuning.n_trials == len(finished)
    best = study.best_trial
    assert refit.tuning.best_params == best.params
    assert refit.tuning.best_value == pytest.approx(best.value)
    expected = fit_lgbm(train, best.params, THREADS)
    assert refit.model.booster.model_to_string() == expected.booster.model_to_string()
