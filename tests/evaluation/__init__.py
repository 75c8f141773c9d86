"""Tests of `components/evaluation/`."""
