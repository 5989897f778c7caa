"""Benchmarks of the per-row composition layer and the lock-step weight search.

Run from the repository root as `python -m benchmarks.throughput` and `python -m benchmarks.search`
(see benchmarks/README.md). Nothing here is part of the installed package.
"""
