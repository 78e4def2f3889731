"""Resource figures of a run: memory peaks, wall time, throughput."""

from __future__ import annotations

import contextlib
import logging
import resource
import sys
import time
from collections.abc import Iterator
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
    """Accumulates the seconds spent inside `with stopwatch:` blocks, the block under way
    included: a checkpoint saved inside one records the time spent so far."""

    def __init__(self) -> None:
        self._done = 0.0
        self._start: float | None = None

    @property
    def seconds(self) -> float:
        running = 0.0 if self._start is None else time.perf_counter() - self._start
        return self._done + running

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._done = self.seconds
        self._start = None


class _Once(logging.Filter):
    """Lets each distinct message through the first time only."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] in ("bench", "__main__"):
            return True  # the harness's own messages are never held back
        key = (record.name, record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


@contextlib.contextmanager
def messages_once() -> Iterator[None]:
    """Within a run, a library message that repeats is shown once (`adapters` warned "There are
    adapters available but none are activated for the forward pass." 8 times per MAD-X run).
    The filter sits on the handlers that print library logs: Python's last-resort handler (for
    loggers with none of their own, as `adapters`'), the root logger's (an application's, or
    pytest's), and those of `transformers`' root logger, which does not propagate."""
    handlers = [
        logging.lastResort, *logging.getLogger().handlers,
        *logging.getLogger("transformers").handlers,
    ]  # fmt: skip
    filters = {handler: _Once() for handler in handlers if handler is not None}  # one each: a
    for handler, once in filters.items():  # record that two handlers print passes both
        handler.addFilter(once)
    try:
        yield
    finally:
        for handler, once in filters.items():
            handler.removeFilter(once)
