"""Benchmarks, run by hand: python -m bench.run (see bench/README.md)."""
