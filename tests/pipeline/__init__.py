"""Tests of `components/pipeline/`."""
