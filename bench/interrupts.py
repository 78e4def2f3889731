"""Ctrl-C and SIGTERM (and SIGUSR2, a Slurm job's warning): they stop a run or a sweep the same
way, never in the middle of a step.

`stop_on_sigterm` makes SIGTERM (`kill`, a batch system's stop) raise KeyboardInterrupt as Ctrl-C
does, so that the run is checkpointed and recorded KILLED instead of vanishing while RUNNING.
`deferred` holds both signals back for the span of a block (one training step, a checkpoint
write) and raises once the block is done, so that a checkpoint never holds a half-applied
optimizer step or a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

# SIGUSR2: Slurm's warning before a time limit or preemption, which submitit's handler answers by
# requeueing the job and exiting (SystemExit, which a run takes as an interrupt)
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


def stop_on_sigterm() -> None:
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGUSR2 wait until the block ends, then act as they would have
    (handlers set to ignore a signal still ignore it). Elsewhere than in the main thread, a
    no-op: signals are only delivered there."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    # an ignored signal stays ignored; a handler not set from Python (None) cannot be restored
    previous = {s: h for s in SIGNALS if (h := signal.getsignal(s)) not in (signal.SIG_IGN, None)}
    for s in previous:
        signal.signal(s, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if received:
            handler = previous[received[0]]
            if callable(handler):
                handler(received[0], None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), received[0])  # what the signal would have done
