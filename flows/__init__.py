"""Prefect wiring: flows and thin tasks over `components`, plus the `cropsearch` CLI."""
