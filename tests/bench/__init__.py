"""Tests of the benchmarks and the crash loop (`bench/`)."""
