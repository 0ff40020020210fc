"""The JSON records the pipeline writes (manifests, summaries, history): plain, stable, timestamped."""
from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import numpy as np


def jsonable(value: Any) -> Any:
    """Plain JSON: numpy scalars become Python numbers, NaN/inf become null."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def json_text(data: Any) -> str:
    """Sorted, indented JSON of `jsonable(data)`: the same record always gives the same text."""
    return json.dumps(jsonable(data), indent=2, sort_keys=True, allow_nan=False) + "\n"


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
