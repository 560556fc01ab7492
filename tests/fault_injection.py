"""Failures injected into the file system calls that atomic writes make."""
import os


def fail_nth_replace(monkeypatch, n: int, exc: BaseException) -> list:
    """Make the ``n``-th ``os.replace`` from now raise ``exc`` (the others replace as usual); returns the list of
    destinations replaced or tried, in order."""
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == n:
            raise exc
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    return calls
