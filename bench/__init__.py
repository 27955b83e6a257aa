"""Load generation and the benchmarks behind `make bench` (written to docs/benchmarks.md)."""
