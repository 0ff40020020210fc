"""The README's environment table documents exactly the variables the code reads."""
import re

from levibot_assets_tests.conftest import REPO_ROOT

VARIABLE = re.compile(r"\b(LEVIBOT_[A-Z0-9_]*[A-Z0-9])\b")
README_LINES_MAX = 200


def _read_by_code() -> set[str]:
    files = [*(REPO_ROOT / "levibot_assets").rglob("*.py"), REPO_ROOT / "levibot_assets_tests" / "conftest.py"]
    return {name for path in files for name in VARIABLE.findall(path.read_text())}


def _documented() -> set[str]:
    rows = [line for line in (REPO_ROOT / "README.md").read_text().splitlines() if line.startswith("| `")]
    return {name for row in rows for name in VARIABLE.findall(row.split("|")[1])}


def test_the_environment_table_and_the_code_name_the_same_variables():
    read, documented = _read_by_code(), _documented()
    assert read - documented == set(), "read by the code but missing from README.md's table"
    assert documented - read == set(), "in README.md's table but read nowhere"


def test_the_readme_stays_short():
    assert len((REPO_ROOT / "README.md").read_text().splitlines()) <= README_LINES_MAX
