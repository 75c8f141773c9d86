"""Pydantic records and parameters shared by components, flows and the CLI."""
