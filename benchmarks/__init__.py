"""Benchmark scripts for `iqa` (not part of the test suite's timing); see benchmarks/README.md."""
