"""Dagster resources: storage, market data, IO managers, alerting."""
