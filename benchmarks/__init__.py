"""Benchmarks that measure speed and record results in BENCHMARKS.md."""
