"""The `levibot` command: releases, rollback and predict, with clear errors."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from levibot_assets.cli import COMMANDS, main
from levibot_assets.core.layout import DataLayout
from levibot_assets.core.release.deploy import current_release_date, publish, read_history
from levibot_assets.core.tables import atomic_write_parquet
from levibot_assets.serving import load_current
from levibot_assets_tests import release_fixtures as rf
from levibot_assets_tests.conftest import REPO_ROOT

DATES = ["2025-10-01", "2025-10-02", "2025-10-03"]


@pytest.fixture(scope="module")
def model():
    return rf.lgbm()


@pytest.fixture
def layout(tmp_path, model) -> DataLayout:
    layout = DataLayout(tmp_path / "data")
    for i, date in enumerate(DATES):
        publish(layout, rf.released_decision(date, rf.SYMBOL, model, score=0.51 + i / 100))
    return layout


def run(layout: DataLayout, *argv: str) -> int:
    return main([argv[0], "--data-dir", str(layout.root), *argv[1:]])


def test_subcommands_are_registered_in_one_place():
    assert {"releases", "rollback", "predict"} <= set(COMMANDS)


def test_releases_lists_scores_and_marks_the_current_one(layout, capsys):
    assert run(layout, "releases", "--symbol", rf.SYMBOL) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "score" in lines[0] and lines[4:7] == ["", "in service now:", lines[6]] and len(lines) == 9
    assert lines[3].startswith("* BTCUSDT") and "2025-10-03" in lines[3] and "0.5300" in lines[3]
    assert not any(line.startswith("*") for line in lines[1:3])
    # the in-service table: release, family, since the history event that put it in service, no live days yet
    since = read_history(layout, rf.SYMBOL)[-1]["at"][:16].replace("T", " ")
    assert lines[8] == f"| BTCUSDT | 2025-10-03 | lgbm | {since} | - | 0 |"


def test_releases_without_any(tmp_path, capsys):
    assert main(["releases", "--data-dir", str(tmp_path)]) == 0
    assert "no releases" in capsys.readouterr().out


def test_rollback_previous_then_forward(layout, capsys):
    assert run(layout, "rollback", "--symbol", rf.SYMBOL, "--to", "previous") == 0
    assert "now serving 2025-10-02 (was 2025-10-03)" in capsys.readouterr().out
    assert run(layout, "rollback", "--symbol", rf.SYMBOL, "--to", "2025-10-03") == 0
    assert current_release_date(layout, rf.SYMBOL) == "2025-10-03"
    assert [e["event"] for e in read_history(layout)][-2:] == ["rollback", "rollback"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--symbol", "ETHUSDT", "--to", "previous"], "no releases for symbol 'ETHUSDT'"),
        (["--symbol", rf.SYMBOL, "--to", "2024-01-01"], "has no release dated 2024-01-01"),
        (["--symbol", rf.SYMBOL, "--to", "last week"], "neither 'previous' nor a YYYY-MM-DD"),
    ],
)
def test_rollback_errors_are_one_clear_line(layout, capsys, argv, message):
    assert run(layout, "rollback", *argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert current_release_date(layout, rf.SYMBOL) == "2025-10-03"


def test_rollback_to_a_tampered_release_is_refused(layout, capsys):
    path = layout.release_dir("2025-10-02", rf.SYMBOL) / "lgbm.txt"
    path.write_bytes(path.read_bytes()[:-10])
    assert run(layout, "rollback", "--symbol", rf.SYMBOL, "--to", "previous") == 2
    assert "does not match the sha256" in capsys.readouterr().err
    assert current_release_date(layout, rf.SYMBOL) == "2025-10-03"


def test_invalid_symbol_is_rejected_by_the_parser(layout, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(layout, "rollback", "--symbol", "btc/usdt", "--to", "previous")
    assert exit_info.value.code == 2
    assert "invalid symbol 'btc/usdt'" in capsys.readouterr().err


def test_predict_prints_the_up_probability_of_the_latest_bar(layout, capsys):
    window = rf.feature_window(days=2)
    for day, frame in window.items():
        atomic_write_parquet(layout.table("features", day, rf.SYMBOL), frame)
    assert run(layout, "predict", "--symbol", rf.SYMBOL) == 0
    out = capsys.readouterr().out
    last = window[max(window)].iloc[[-1]]
    expected = float(load_current(rf.SYMBOL, layout.root).predict_proba(last)[0])
    assert f"P(up over the next 15 bars) = {expected:.4f}" in out
    assert str(last["timestamp"].iloc[0]) in out and "release 2025-10-03, lgbm" in out


def test_predict_without_features_says_what_to_do(layout, capsys):
    assert run(layout, "predict", "--symbol", rf.SYMBOL) == 2
    assert "materialize features first" in capsys.readouterr().err


def test_console_entry_point_runs(layout):
    result = subprocess.run(
        [sys.executable, "-m", "levibot_assets.cli", "releases", "--data-dir", str(layout.root)],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "* BTCUSDT" in result.stdout


# what `levibot predict` must not import: its cold start is what a user waits for (scipy.sparse
# is imported by lightgbm itself)
HEAVY = {"dagster", "torch", "sklearn", "matplotlib", "optuna"}
NOT_IMPORTED = {"lgbm": HEAVY, "logistic": HEAVY | {"scipy", "lightgbm"}}


@pytest.mark.parametrize("model_type", sorted(NOT_IMPORTED))
def test_predict_imports_only_what_the_release_needs(tmp_path, model, model_type):
    from levibot_assets.core.baselines import fit_logistic

    layout = DataLayout(tmp_path / "data")
    served = model if model_type == "lgbm" else fit_logistic(rf.split().train)
    publish(layout, rf.released_decision(DATES[0], rf.SYMBOL, served))
    for day, frame in rf.feature_window(days=2).items():
        atomic_write_parquet(layout.table("features", day, rf.SYMBOL), frame)
    script = (
        "import sys; from levibot_assets.cli import main; "
        f"code = main(['predict', '--symbol', '{rf.SYMBOL}', '--data-dir', sys.argv[1]]); "
        "print(sorted({m.split('.')[0] for m in sys.modules})); sys.exit(code)"
    )
    result = subprocess.run([sys.executable, "-c", script, str(layout.root)], cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"{model_type})" in result.stdout  # "(release <date>, <model type>)"
    imported = set(eval(result.stdout.strip().splitlines()[-1]))
    assert not imported & NOT_IMPORTED[model_type], sorted(imported & NOT_IMPORTED[model_type])


LEVIBOT = Path(sys.executable).with_name("levibot")  # the console script installed beside this Python

# case -> (argv, LEVIBOT_* variables, what the one error line must name); {file} is a plain file,
# {data} a data directory whose only features file, {corrupt}, is not parquet.
BAD_INPUTS = {
    "data dir option is a file": (["releases", "--data-dir", "{file}"], {}, "--data-dir {file} is not a directory"),
    "data dir variable is a file": (["rollback", "--symbol", "BTCUSDT", "--to", "previous"],
                                    {"LEVIBOT_DATA_DIR": "{file}"}, "LEVIBOT_DATA_DIR {file} is not a directory"),
    "corrupt parquet": (["predict", "--symbol", "BTCUSDT", "--data-dir", "{data}"], {},
                        "{corrupt} is not a readable parquet file"),
    "empty symbols": (["releases", "--data-dir", "{data}"], {"LEVIBOT_SYMBOLS": ""}, "LEVIBOT_SYMBOLS is set but empty"),
    "future start date": (["releases", "--data-dir", "{data}"], {"LEVIBOT_START_DATE": "2999-01-01"},
                          "LEVIBOT_START_DATE='2999-01-01' is after today"),
    "bad symbol variable": (["releases", "--data-dir", "{data}"], {"LEVIBOT_SYMBOLS": "BTC/USDT"},
                            "LEVIBOT_SYMBOLS: invalid symbol 'BTC/USDT'"),
    "bad symbol option": (["predict", "--symbol", "btc/usdt", "--data-dir", "{data}"], {},
                          "argument --symbol: invalid symbol 'btc/usdt'"),
    "bad symbols option": (["materialize", "--symbols", "BTCUSDT,btcusdt"], {},
                           "argument --symbols: invalid symbol 'btcusdt'"),
}


@pytest.mark.parametrize("argv, variables, named", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_one_line_naming_it_with_status_2(tmp_path, argv, variables, named):
    paths = {"file": tmp_path / "not-a-dir", "data": tmp_path / "data",
             "corrupt": DataLayout(tmp_path / "data").table("features", "2025-10-01", "BTCUSDT")}
    paths["file"].write_text("x")
    paths["corrupt"].parent.mkdir(parents=True)
    paths["corrupt"].write_bytes(b"PAR1 truncated")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVIBOT_")}
    env |= {name: value.format(**paths) for name, value in variables.items()}
    result = subprocess.run([str(LEVIBOT), *(a.format(**paths) for a in argv)], env=env, capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("levibot: error: "), result.stderr
    assert named.format(**paths) in result.stderr and "Traceback" not in result.stderr
