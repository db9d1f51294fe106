"""Benchmarks: run each as ``python -m benchmarks.<name>``; results go in benchmarks/RESULTS.md."""
