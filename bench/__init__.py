"""Benchmarks and the workload generator they share with the tests."""
