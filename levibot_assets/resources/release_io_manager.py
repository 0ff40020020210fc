"""The release IO manager: best_release's decision -> dated release directory + atomic symlink swaps.

Writing goes through core.release.publish (files first, fsync, manifest last, one rename, then the
current/<SYMBOL> and best_* links); loading returns the recorded decision, with the released model
loaded from hash-verified bytes.
"""
from __future__ import annotations

import dagster as dg

from levibot_assets.core.release import ReleaseDecision, load_decision, load_release, publish
from levibot_assets.partitions import parse_partition_key
from levibot_assets.resources.storage import StorageResource


class ReleaseIOManager(dg.ConfigurableIOManager):
    """releases/<date>/<SYMBOL>/ + summary.json + history.jsonl; current/<SYMBOL> and best_* links."""

    storage: StorageResource

    def handle_output(self, context: dg.OutputContext, obj: ReleaseDecision) -> None:
        date, symbol = parse_partition_key(context.partition_key)
        if (obj.date, obj.symbol) != (date.isoformat(), symbol):
            raise ValueError(f"decision for {obj.date}|{obj.symbol} handed to partition {context.partition_key}")
        layout = self.storage.layout
        entry = publish(layout, obj)
        metadata = {
            "released": dg.MetadataValue.bool(obj.released),
            "current_release": dg.MetadataValue.text(entry["current_release"] or "none"),
            "summary": dg.MetadataValue.path(str(layout.release_summary(date))),
        }
        if obj.released:
            metadata["path"] = dg.MetadataValue.path(str(layout.release_dir(date, symbol)))
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> ReleaseDecision:
        (key,) = list(context.asset_partition_keys)
        date, symbol = parse_partition_key(key)
        layout = self.storage.layout
        decision = load_decision(layout, date, symbol)
        if decision.released:
            decision.model, _ = load_release(layout.release_dir(date, symbol))
        return decision
