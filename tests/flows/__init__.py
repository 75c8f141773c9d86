"""Tests of the flows, the CLI and the deployments: Prefect end to end."""
