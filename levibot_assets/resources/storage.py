"""The storage resource: the data directory, exposed as a DataLayout (the one place paths are built)."""
from __future__ import annotations

import dagster as dg

from levibot_assets.core.layout import DataLayout


class StorageResource(dg.ConfigurableResource):
    """Root of every file the pipeline writes (LEVIBOT_DATA_DIR: a local path or s3://bucket/prefix)."""

    data_dir: str

    @property
    def layout(self) -> DataLayout:
        return DataLayout(self.data_dir)
