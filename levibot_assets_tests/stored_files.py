"""What a data directory holds, read back for comparing two of them (local disk or S3)."""
from __future__ import annotations

DATA_ASSETS = ("raw_ohlcv", "features")


def parquet_files(root, assets: tuple[str, ...] = DATA_ASSETS) -> dict[str, bytes]:
    """{path relative to `root`: bytes} of the assets' parquet files under a local or S3 data directory."""
    return {str(p).removeprefix(f"{root}/"): p.read_bytes()
            for asset in assets for p in sorted((root / asset).rglob("*.parquet"))}
