"""Measuring a quantization: the accuracy harness, engines, statistics, sharding, the error budget, the stock baseline."""
