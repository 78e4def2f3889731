"""Resource figures of a run: memory peaks, wall time, throughput."""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")


def reset_peaks() -> None:
    """Start the memory peaks afresh, so that a run measures its own and not those of an earlier
    run in the same process (a sweep's trials). Linux resets the resident peak (VmHWM) on writing
    5 to clear_refs; elsewhere the peak stays the process's."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_rss_mb() -> float:
    """Peak resident memory since `reset_peaks` (Linux: VmHWM), else of the process so far
    (ru_maxrss is KiB on Linux, bytes on macOS)."""
    if _STATUS.exists():
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def peak_gpu_mb() -> float | None:
    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / (1024 * 1024)


class Stopwatch:
    """Accumulates the seconds spent inside `with stopwatch:` blocks."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds += time.perf_counter() - self._start
