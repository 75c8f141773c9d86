"""Tests of `components/ops/`."""
