"""The project's error types: every failure a user can cause is one of these, with a message that names the problem."""


def some_of(items: list[str], limit: int = 12) -> str:
    """The first ``limit`` items for a one-line error message, and how many more there are."""
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


class TsptqError(Exception):
    """Base class of every error tsptq raises on purpose."""


class ModelError(TsptqError):
    """Unknown model name, unreadable or mismatched checkpoint, unsupported architecture."""


class DataError(TsptqError):
    """Missing data set, wrong image size, empty set, unreadable file."""


class QuantizationError(TsptqError):
    """Unknown method or bit width, empty calibration set, impossible quantization parameters."""


class ModelFileError(TsptqError):
    """A .tflite file that cannot be read: truncated, corrupted, wrong identifier, unknown metadata version,
    metadata that disagrees with the graph."""


class UnsupportedOpError(ModelFileError):
    """A .tflite op (or op version, dtype, option) that the tsptq integer model does not implement."""


class RuntimeCError(TsptqError):
    """An error reported by the C runtime (runtime_c/): its message, and its code (``code``, ``name``: the
    ``TSPTQ_ERR_*`` constant of runtime_c/include/tsptq.h)."""

    def __init__(self, message: str, code: int = -1, name: str = ""):
        super().__init__(message)
        self.code = code
        self.name = name
