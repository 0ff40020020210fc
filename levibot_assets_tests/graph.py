"""The graph the tests run: built once from the test environment, which conftest sets first.

The package builds its definitions from a Settings value only when asked
(levibot_assets.definitions.build_definitions); the tests take theirs from the same functions, with
the start date conftest gives so the shared real data (March/April 2023) are valid partitions.
The asset objects are the unbound ones (build_assets), so a test hands them its own resources.
"""
from levibot_assets.definitions import build_assets, build_definitions
from levibot_assets.settings import Settings

SETTINGS = Settings.from_env()
ASSETS = build_assets(SETTINGS)
raw_ohlcv, features, lgbm_model, tft_model, best_release = ASSETS
DEFS = build_definitions(SETTINGS)
DEFS.get_repository_def()  # resolved now, before any test instance comes and goes
nightly_schedule = DEFS.resolve_schedule_def("nightly_schedule")
