"""Credentials out of what the pipeline shows and stores: messages, logs, run records, alerts.

Configured URLs may carry secrets: `user:password@` in any of them (exchange endpoints and proxies
in LEVIBOT_CCXT_OPTIONS, LEVIBOT_OPTUNA_STORAGE, the Celery broker and backend), a token in the
path or query of a webhook. Libraries quote the URL they failed on in their errors (ccxt: "binance
GET http://user:pw@host/..."), so error text is passed through `redact_text` before it becomes a
message, and a URL the project names itself goes through `redact_url`.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

# scheme://userinfo@ : the userinfo holds no '/', '?', '#', '@' or space in a URL (they are escaped there)
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#@]+@")


def redact_url(url: str) -> str:
    """scheme://host:port/... : enough to know which endpoint, never the credentials, path or query."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    host = (parts.hostname or "?") + (f":{port}" if port else "")
    credentials = "***@" if "@" in parts.netloc else ""
    return f"{parts.scheme or '?'}://{credentials}{host}/..."


def redact_text(text: str) -> str:
    """`text` with the credentials of every URL in it replaced by ***."""
    return _USERINFO.sub(r"\g<scheme>***@", text)
