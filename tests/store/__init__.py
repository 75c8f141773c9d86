"""Tests of `components/store/`."""
