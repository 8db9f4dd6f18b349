"""The memory a process holds (resident set), for the speed benchmarks; imports nothing heavy, so a
benchmark worker measuring another engine does not pay for it."""

from __future__ import annotations

import resource


def rss_mb() -> float:
    """Resident memory now, in MB (the peak where psutil is missing)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 1e6
    except ImportError:  # pragma: no cover - psutil is a dependency
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """The most resident memory this process has held, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # Linux reports KiB
