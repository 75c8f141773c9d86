"""Tests of `components/models/`."""
