"""Benchmarks: `make bench`. Each bench_*.py prints ratios against a baseline
measured in the same run, so figures compare across machines."""
