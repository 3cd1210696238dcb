"""Benchmarks: scripts that start a private stack, put load on it and print figures.

`python -m bench.sync_predict` (`make bench`) compares the synchronous prediction path
with a bare in-process FastAPI endpoint serving the same model.
"""
