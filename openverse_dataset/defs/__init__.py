"""Dagster wiring only: resources, partitions, assets per stage, checks, jobs, sensors (autoloaded)."""
