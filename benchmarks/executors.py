"""The same range backfill on LEVIBOT_EXECUTOR=in_process, multiprocess and celery (2 workers).

The backfill: raw_ohlcv + features for --days dates x 3 symbols (synthetic source) as ONE range
run, then one lgbm_model partition (the last date, BTCUSDT, --trials Optuna trials, the days
before it as training window) as a second run. Each executor runs it with the real CLI as a user
types it, from a fresh instance and a fresh data directory:

    dagster asset materialize -m levibot_assets.definitions --select raw_ohlcv,features \\
        --partition-range 'D1|BTCUSDT...DN|SOLUSDT'
    dagster asset materialize -m levibot_assets.definitions --select lgbm_model --partition 'DN|BTCUSDT'

Every executor uses the same instance: the deployment's docker/dagster.yaml (PostgreSQL run, event
log and schedule storage) on one throwaway PostgreSQL server, one database per executor
(levibot_assets_tests.postgres). For celery, a redis-server on 127.0.0.1 and two workers `celery -A
levibot_assets.instance.executors:celery_app worker -Q dagster -c 1` are started as the celery test starts
them (levibot_assets_tests.celery_cluster) before the two commands, and stopped after them; their
start-up is not part of the executor's wall time. Every process started here is stopped by its PID
(process group), also on failure.

Measured per executor: wall time of the two commands (process start, i.e. ~8 s of imports each,
included), the runs' own time in the instance (RUN_START to the run's end), the number of steps
(STEP_START events) and the overhead per step = (time - plain) / steps, where plain is the same
work as plain Python in this process (imports paid beforehand): benchmarks/backfill_overhead.py's
plain loop for raw_ohlcv + features, then lgbm_model's work (window, split, train_lgbm, scoring
against the baselines, plot, checks, files) without Dagster. Every output file of every executor is
compared with the in_process run's and with the plain loop's, byte for byte (lgbm_metrics.json also
with its train_seconds removed, the one value that is a timing). Prints a Markdown table and writes
it to --out.

    .venv/bin/python benchmarks/executors.py [--days 14] [--trials 8] [--out benchmarks/out/executors.md]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]

# A clean LEVIBOT_* environment before the package is imported (partitions are built at import).
for _name in [n for n in os.environ if n.startswith("LEVIBOT_")]:
    del os.environ[_name]

from backfill_overhead import FIRST_DAY, SYMBOLS, plain_backfill  # noqa: E402  (sets LEVIBOT_START_DATE)

OUT = REPO / "benchmarks" / "out" / "executors.md"
EXECUTORS = ("in_process", "multiprocess", "celery")
MODEL_SYMBOL = SYMBOLS[0]
COMMAND_TIMEOUT_S = 900


def common_env(days: int, trials: int) -> dict[str, str]:
    return {
        "LEVIBOT_SOURCE": "synthetic",
        "LEVIBOT_START_DATE": FIRST_DAY.isoformat(),
        "LEVIBOT_SYMBOLS": ",".join(SYMBOLS),
        "LEVIBOT_TRAIN_DAYS": str(min(14, days)),
        "LEVIBOT_OPTUNA_TRIALS": str(trials),
        "LEVIBOT_THREADS": "1",  # the same for every executor and the plain loop: identical lgbm.txt
    }


# --- the plain-Python baseline -------------------------------------------------------------------


def plain_lgbm(settings, date: dt.date, symbol: str) -> None:
    """What lgbm_model does for one partition (assets/models.py), minus Dagster."""
    from levibot_assets.checks import drift_check_result, model_check_results
    from levibot_assets.core.atomic import atomic_write_bytes
    from levibot_assets.core.dataset import align_to_rows, load_feature_window, split_window
    from levibot_assets.core.evaluation import evaluate_models
    from levibot_assets.core.layout import DataLayout
    from levibot_assets.core.lgbm import train_lgbm
    from levibot_assets.core.model_api import TrainedModel
    from levibot_assets.core.model_store import save_trained_model
    from levibot_assets.core.plots import evaluation_png
    from levibot_assets.core.splits import purge_gap
    from levibot_assets.resources.pipeline import PipelineConfig

    pipeline = PipelineConfig.from_settings(settings)
    layout = DataLayout(settings.data_dir)
    window = load_feature_window(layout, symbol, date, pipeline.train_days, pipeline.label_horizon)
    data = split_window(window, date, pipeline.label_horizon)
    training = train_lgbm(data.train, horizon=pipeline.label_horizon, n_trials=pipeline.optuna_trials,
                          threads=pipeline.threads, storage=None, study_name=f"lgbm-{date.isoformat()}-{symbol}",
                          progress=lambda message: None)
    model = training.model
    on_context = model.predict_proba(data.context)
    proba, calibration = (align_to_rows(data.context, on_context, rows) for rows in (data.test, data.train))
    evaluation = evaluate_models(data.test, {"lgbm": proba}, data.train, pipeline.scoring, calibration={"lgbm": calibration})
    png = evaluation_png(evaluation, f"{symbol} {date} lgbm", model.feature_importance())
    metrics = {"model_type": "lgbm", "symbol": symbol, "test_date": date.isoformat(),
               "train_days": sorted(d for d in window if d < date.isoformat()), **training.facts(),
               "evaluation": evaluation.as_dict()}
    metric = pipeline.select_metric
    checks = model_check_results(metric, evaluation.scores["lgbm"][metric],
                                 {name: evaluation.scores[name][metric] for name in evaluation.baselines},
                                 data.train["timestamp"].max(), data.test["timestamp"].min(),
                                 purge_gap(pipeline.label_horizon))
    checks.append(drift_check_result(window, date, pipeline.psi_warn))
    save_trained_model(layout, date, symbol, TrainedModel(model=model, metrics=metrics))
    atomic_write_bytes(layout.model_plot(date, symbol, "lgbm"), png)


def plain_run(env: dict[str, str], dates: list[dt.date], data_dir: Path, with_model: bool) -> dict[str, float]:
    from levibot_assets.settings import Settings

    t0 = time.perf_counter()
    plain_backfill(dates, SYMBOLS, data_dir)
    data_s = time.perf_counter() - t0
    model_s = 0.0
    if with_model:
        settings = Settings.from_env({**env, "LEVIBOT_DATA_DIR": str(data_dir)})
        t0 = time.perf_counter()
        plain_lgbm(settings, dates[-1], MODEL_SYMBOL)
        model_s = time.perf_counter() - t0
    return {"data": data_s, "model": model_s}


# --- Dagster runs through the CLI ------------------------------------------------------------------


@contextmanager
def environ(values: dict[str, str]):
    """os.environ updated for the block (the instance reads DAGSTER_PG_* when it is opened)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def cli(env: dict[str, str], select: str, partition_args: list[str], log: Path) -> float:
    command = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "levibot_assets.definitions",
               "--select", select, *partition_args]
    t0 = time.perf_counter()
    with log.open("ab") as out:
        done = subprocess.run(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT_S)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}) with {env['LEVIBOT_EXECUTOR']}:\n{tail}")
    return wall


def run_facts(home: Path, pg_env: dict[str, str]) -> list[dict]:
    """Every run of the instance, oldest first: id, seconds from RUN_START to the end, steps started."""
    import dagster as dg

    with environ(pg_env), dg.DagsterInstance.from_config(str(home)) as instance:
        facts = []
        for record in sorted(instance.get_run_records(), key=lambda r: r.start_time or 0):
            run_id = record.dagster_run.run_id
            assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS, (run_id, record.dagster_run.status)
            steps = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records
            workers = sorted({r.event_log_entry.dagster_event.event_specific_data.metadata["Celery worker"].value
                              for r in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
                              if r.event_log_entry.dagster_event
                              and "Celery worker" in r.event_log_entry.dagster_event.event_specific_data.metadata})
            facts.append({"run_id": run_id, "seconds": record.end_time - record.start_time,
                          "steps": len(steps), "celery_workers": workers})
        return facts


def backfill(name: str, env: dict[str, str], dates: list[dt.date], with_model: bool, log: Path) -> dict:
    walls = {"data": cli(env, "raw_ohlcv,features", ["--partition-range",
                         f"{dates[0]}|{SYMBOLS[0]}...{dates[-1]}|{SYMBOLS[-1]}"], log)}
    if with_model:
        walls["model"] = cli(env, "lgbm_model", ["--partition", f"{dates[-1]}|{MODEL_SYMBOL}"], log)
    pg_env = {k: v for k, v in env.items() if k.startswith("DAGSTER_PG_")}
    runs = run_facts(Path(env["DAGSTER_HOME"]), pg_env)
    assert len(runs) == len(walls), (name, runs)
    return {"walls": walls, "runs": dict(zip(walls, runs))}


# --- outputs ----------------------------------------------------------------------------------------


def files_of(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".") and p.parts[len(root.parts)] in ("raw_ohlcv", "features", "models")}


def without_timing(path: Path) -> dict:
    metrics = json.loads(path.read_text())
    metrics.pop("train_seconds", None)
    return metrics


def compare(reference: Path, other: Path) -> tuple[int, list[str], list[str]]:
    """(files, names differing in bytes, names differing beyond train_seconds)."""
    ref, oth = files_of(reference), files_of(other)
    assert ref.keys() == oth.keys(), f"different file sets: {sorted(ref.keys() ^ oth.keys())[:10]}"
    differ = [name for name in ref if ref[name].read_bytes() != oth[name].read_bytes()]
    really = [name for name in differ
              if not (name.endswith("_metrics.json") and without_timing(ref[name]) == without_timing(oth[name]))]
    return len(ref), differ, really


# --- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=14, help="dates of the range (the model's window is min(14, days))")
    parser.add_argument("--trials", type=int, default=8, help="Optuna trials of the lgbm_model partition")
    parser.add_argument("--no-model", action="store_true", help="only the raw_ohlcv + features range run")
    parser.add_argument("--executors", default=",".join(EXECUTORS))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    executors = [e.strip() for e in args.executors.split(",") if e.strip()]
    assert set(executors) <= set(EXECUTORS) and "in_process" in executors, f"executors: in_process + any of {EXECUTORS}"
    with_model = not args.no_model
    dates = [FIRST_DAY + dt.timedelta(days=i) for i in range(args.days)]
    env0 = common_env(args.days, args.trials)
    os.environ.update(env0)

    from levibot_assets_tests.celery_cluster import find_redis, start_redis, start_workers
    from levibot_assets_tests.postgres import postgres_running

    import levibot_assets.definitions  # noqa: F401  (import cost is not part of the plain loop)

    load_before = os.getloadavg()
    results: dict[str, dict] = {}
    extra: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="levibot-executors-") as tmp, ExitStack() as stack:
        tmp = Path(tmp)
        plain = plain_run(env0, dates, tmp / "plain", with_model)
        print(f"plain: {plain}", flush=True)
        server = stack.enter_context(postgres_running())
        base = {k: v for k, v in os.environ.items() if not k.startswith(("LEVIBOT_", "DAGSTER_"))}
        for name in executors:
            home = tmp / f"home-{name}"
            home.mkdir()
            shutil.copy(REPO / "docker" / "dagster.yaml", home / "dagster.yaml")  # the deployment's instance
            env = {**base, **env0, **server.dagster_env(server.create_database(f"dagster_{name}")),
                   "DAGSTER_HOME": str(home), "DAGSTER_COMPUTE_LOGS_DIR": str(tmp / f"compute-logs-{name}"),
                   "LEVIBOT_DATA_DIR": str(tmp / f"data-{name}"), "LEVIBOT_EXECUTOR": name, "PYTHONWARNINGS": "ignore",
                   # the CLI and the workers import the package of this checkout (as this process does)
                   "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
            log = tmp / f"cli-{name}.log"
            with ExitStack() as cluster:
                if name == "celery":
                    redis_bin = find_redis()
                    if redis_bin is None:
                        raise SystemExit("redis-server not found: run scripts/install_system_deps.sh")
                    t0 = time.perf_counter()
                    port = start_redis(cluster, redis_bin, tmp)
                    env["LEVIBOT_CELERY_BROKER"] = f"redis://127.0.0.1:{port}/0"
                    start_workers(cluster, env, tmp)
                    extra["celery_start"] = time.perf_counter() - t0
                results[name] = backfill(name, env, dates, with_model, log)
            print(f"{name}: {results[name]}", flush=True)
        comparisons = {name: compare(tmp / "data-in_process", tmp / f"data-{name}") for name in executors[1:]}
        comparisons["plain"] = compare(tmp / "data-in_process", tmp / "plain")
    load_after = os.getloadavg()

    plain_s = plain["data"] + plain["model"]
    n = len(dates) * len(SYMBOLS)
    ref_wall = sum(results["in_process"]["walls"].values())
    lines = [
        f"raw_ohlcv + features for {len(SYMBOLS)} symbols x {len(dates)} days ({dates[0]}..{dates[-1]}) = {n} partitions "
        "per asset in one range run" + (
            f", then lgbm_model for `{dates[-1]}|{MODEL_SYMBOL}` ({args.trials} Optuna trials, {env0['LEVIBOT_TRAIN_DAYS']}-day "
            "window) in a second run" if with_model else "")
        + f"; synthetic source, LEVIBOT_THREADS=1, `dagster asset materialize` ({os.cpu_count()} cores, "
        f"Python {platform.python_version()}). Every executor: docker/dagster.yaml on PostgreSQL (one database each).",
        "",
        "| executor | wall s (CLI, process start included) | run s (in the instance) | steps | overhead s/step (wall) "
        "| overhead s/step (run) | wall vs in_process |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| plain Python loop (this process, no Dagster) | {plain_s:.1f} | | | | | |",
    ]
    for name, result in results.items():
        wall = sum(result["walls"].values())
        run_s = sum(r["seconds"] for r in result["runs"].values())
        steps = sum(r["steps"] for r in result["runs"].values())
        lines.append(f"| {name} | {wall:.1f} | {run_s:.1f} | {steps} | {(wall - plain_s) / steps:.1f} | "
                     f"{(run_s - plain_s) / steps:.1f} | {wall / ref_wall:.2f} |")
    lines += ["", "Per run (wall s / run s / steps):", ""]
    header = ["run", "plain s", *results]
    lines += ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    labels = {"data": "raw_ohlcv + features (range run)", "model": f"lgbm_model (`{dates[-1]}\\|{MODEL_SYMBOL}`)"}
    for run in results["in_process"]["walls"]:
        cells = [f"{results[name]['walls'][run]:.1f} / {results[name]['runs'][run]['seconds']:.1f} / "
                 f"{results[name]['runs'][run]['steps']}" for name in results]
        lines.append(f"| {labels[run]} | {plain[run]:.1f} | " + " | ".join(cells) + " |")
    lines.append("")
    if "celery" in results:
        workers = sorted({w for r in results["celery"]["runs"].values() for w in r["celery_workers"]})
        lines.append(f"Celery: redis-server + 2 workers started in {extra['celery_start']:.1f} s (not in the wall time); "
                     f"steps ran on {', '.join(workers)}.")
    for name, (count, differ, really) in comparisons.items():
        versus = "the plain loop" if name == "plain" else name
        timing_only = [d for d in differ if d not in really]
        lines.append(f"Outputs in_process vs {versus}: {count} files, {count - len(differ)} byte-identical"
                     + (f", {len(timing_only)} differ only in train_seconds ({', '.join(timing_only)})" if timing_only else "")
                     + (f", **{len(really)} differ**: {', '.join(really[:5])}" if really else "") + ".")
    lines.append(f"Load average (1/5/15 min) before: {' / '.join(f'{x:.2f}' for x in load_before)}, "
                 f"after: {' / '.join(f'{x:.2f}' for x in load_after)}.")
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n")
    if any(really for _, _, really in comparisons.values()):
        raise SystemExit("outputs differ between executors (see above)")


if __name__ == "__main__":
    main()
