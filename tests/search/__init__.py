"""Tests of `components/search/`."""
