"""Measuring a quantization: the accuracy harness, engines, statistics, sharding, the error budget, verifying a file,
the stock baseline."""
