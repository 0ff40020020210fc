"""The alerting resource: where alerts are recorded (alerts.jsonl) and the webhook they go to."""
from __future__ import annotations

from typing import Optional

import dagster as dg

from levibot_assets.core.alerts import Alert, send_alert
from levibot_assets.resources.storage import StorageResource


WEBHOOK_ENV = "LEVIBOT_ALERT_WEBHOOK"


class AlertResource(dg.ConfigurableResource):
    """Records every alert under the data directory and POSTs it to LEVIBOT_ALERT_WEBHOOK if set.

    The webhook URL usually holds a token. Resource config is copied into every run's job snapshot
    (the instance database, the UI), so definitions pass `dg.EnvVar(WEBHOOK_ENV)`: the snapshot then
    holds only the variable's name, and Dagster reads its value when the resource is initialized.
    """

    storage: StorageResource
    webhook_url: Optional[str] = None
    retries: int = 3
    backoff_s: float = 0.5
    timeout_s: float = 5.0

    def send(self, alert: Alert) -> bool:
        """True when the webhook accepted it; the alerts file gets it either way."""
        return send_alert(
            self.storage.layout.alerts_file,
            alert,
            (self.webhook_url or "").strip() or None,  # the raw variable may carry spaces Settings strips
            retries=self.retries,
            backoff_s=self.backoff_s,
            timeout_s=self.timeout_s,
        )
