"""Op jobs launchable from the UI: rollback of a symbol's release (same logic as `levibot rollback`)."""

import dagster as dg

from levibot_assets.core.release.deploy import rollback
from levibot_assets.resources.storage import StorageResource
from levibot_assets.settings import validate_symbol


class RollbackConfig(dg.Config):
    """symbol: e.g. BTCUSDT; to: 'previous' or the YYYY-MM-DD of a release to put back in service."""

    symbol: str
    to: str = "previous"


@dg.op
def rollback_release(context: dg.OpExecutionContext, config: RollbackConfig, storage: StorageResource) -> None:
    """Verify the target release's hashes, swap current/<SYMBOL> atomically, append to history."""
    event = rollback(storage.layout, validate_symbol(config.symbol), config.to)
    context.log.info(f"{event['symbol']}: now serving {event['release']} (was {event['previous'] or 'none'})")
    context.add_output_metadata(
        {"symbol": event["symbol"], "release": event["release"], "previous": event["previous"] or "none"}
    )


@dg.job(description="Put an earlier (or later) release of a symbol back in service.")
def rollback_job():
    rollback_release()
