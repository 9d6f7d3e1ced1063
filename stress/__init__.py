"""stress: the stress-test harness and the benchmarks against peer databases.

The harness uses only the public `mvcc` API; a benchmark of one lower layer
(`stress/bench/<layer>.py`) imports the layer it measures (tests/test_layers.py).
"""
