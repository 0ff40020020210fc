"""Dagster resources: storage (the data directory), market data, pipeline settings, alerting."""
