"""The project's error types: every failure a user can cause is one of these, with a message that names the problem."""


class TsptqError(Exception):
    """Base class of every error tsptq raises on purpose."""


class ModelError(TsptqError):
    """Unknown model name, unreadable or mismatched checkpoint, unsupported architecture."""


class DataError(TsptqError):
    """Missing data set, wrong image size, empty set, unreadable file."""


class QuantizationError(TsptqError):
    """Unknown method or bit width, empty calibration set, impossible quantization parameters."""
