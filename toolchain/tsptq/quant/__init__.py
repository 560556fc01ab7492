"""Quantization: codes (quantizers), calibration observers, searches, block-output selection, methods, the simulator."""
