"""End-to-end tests: the make targets, the Dagster daemon, the benchmarks' smoke runs."""
