"""Benchmarks run with ``python -m serve bench <name>``; each writes JSON and a PNG."""
