"""Thin Dagster wrappers around core/: read partition + config, call core, attach metadata."""
