"""The C runtime from Python: building it, the ctypes binding, emitting C for firmware, the LiteRT delegate."""
