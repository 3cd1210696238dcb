"""Developer tooling: private services for `make run`, the tests and the benchmarks."""
