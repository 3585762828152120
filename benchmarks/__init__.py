"""Measured runs (python -m benchmarks.NAME); never part of the pass/fail test suite."""
