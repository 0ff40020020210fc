"""Alerts: every alert is appended to alerts.jsonl first (never lost), then POSTed to a webhook.

The webhook receives a Slack-compatible payload {"text": ...}. Delivery retries with exponential
backoff and never raises: a broken endpoint must not break the sensor that reports a failure. The
webhook URL often embeds a secret token, so logs only ever show scheme://host/... (core.redaction).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from levibot_assets.core.atomic import append_line
from levibot_assets.core.redaction import redact_text, redact_url

log = logging.getLogger(__name__)

SEVERITIES = ("ERROR", "WARN")


@dataclass(frozen=True)
class Alert:
    """One thing a person should look at: a failed check or a failed run."""

    kind: str  # "asset_check" or "run_failure"
    severity: str  # "ERROR" or "WARN"
    title: str
    details: str = ""
    run_id: str | None = None
    asset: str | None = None
    partition: str | None = None
    created_at: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"alert severity {self.severity!r} must be one of {', '.join(SEVERITIES)}")

    @property
    def text(self) -> str:
        """The message a chat channel shows."""
        where = " ".join(p for p in (self.asset, f"[{self.partition}]" if self.partition else None) if p)
        head = f"[LeviBot {self.severity}] {self.title}" + (f" - {where}" if where else "")
        tail = f"\n{self.details}" if self.details else ""
        run = f"\nrun {self.run_id}" if self.run_id else ""
        return head + tail + run


def append_alert(path: Path, alert: Alert) -> None:
    """Append one JSON line, flushed to disk before returning (safe with concurrent senders)."""
    alert = redacted(alert)
    append_line(path, json.dumps({**asdict(alert), "text": alert.text}, sort_keys=True) + "\n")


def redacted(alert: Alert) -> Alert:
    """The alert with URL credentials removed from its title and details (they quote error messages)."""
    return replace(alert, title=redact_text(alert.title), details=redact_text(alert.details))


def post_webhook(url: str, text: str, retries: int = 3, backoff_s: float = 0.5, timeout_s: float = 5.0) -> bool:
    """POST {"text": text}; True once a 2xx answer came back, False after the last failed try."""
    body = json.dumps({"text": text}).encode("utf-8")
    target = redact_url(url)
    for attempt in range(1, retries + 1):
        try:
            request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                if 200 <= response.status < 300:
                    return True
                reason = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            reason = f"HTTP {exc.code}"
        except urllib.error.URLError as exc:  # str(exc) may quote the URL: log only the cause's type
            reason = f"URLError({type(exc.reason).__name__})"
        except (OSError, ValueError) as exc:
            reason = type(exc).__name__
        log.warning("alert webhook %s failed (try %d/%d): %s", target, attempt, retries, reason)
        if attempt < retries:
            time.sleep(backoff_s * 2 ** (attempt - 1))
    return False


def send_alert(alerts_file: Path, alert: Alert, webhook_url: str | None = None, **post_options) -> bool:
    """Record the alert, then deliver it to the webhook if one is configured; True if delivered."""
    append_alert(alerts_file, alert)
    if not webhook_url:
        return False
    return post_webhook(webhook_url, redacted(alert).text, **post_options)
