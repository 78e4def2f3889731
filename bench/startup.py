"""`python -m bench perf --startup`: how long a user waits for the harness's first answer.

Each command runs in a fresh Python process, as a user types it, several times; the table gives
the median and the fastest wall time, beside `import torch` alone for scale. Names, flags,
options and files are checked before torch, `transformers`, `datasets`, `mlflow` and `optuna`
load, so a typo is answered in a fraction of the time a run needs to start.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

# (what it is, arguments after `python`, the exit code it must give)
COMMANDS = (
    ("`bench list`", ["-m", "bench", "list"], 0),
    ("`bench run --method hyperX` (unknown name)", ["-m", "bench", "run", "--method", "hyperX"], 2),
    (
        "`bench run --set method.botleneck=64` (unknown option)",
        ["-m", "bench", "run", "--method", "hyperx", "--set", "method.botleneck=64"],
        2,
    ),
    ("`bench compare --settings mixd` (unknown setting)",
     ["-m", "bench", "compare", "--methods", "hyperx", "--settings", "mixd"], 2),
    ("`import torch` alone, for scale", ["-c", "import torch"], 0),
)  # fmt: skip
GOAL_S = 2.0  # the bound for an answer to bad input, and for `bench list`


def _cpu_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, of this process's finished children)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    busy = (sum(fields) - fields[3] - fields[4]) / ticks  # all but idle and iowait
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return busy, children.ru_utime + children.ru_stime


def measure(repeats: int) -> tuple[list[tuple[str, list[float]]], float]:
    """Wall seconds of each command, `repeats` times, in fresh processes; and the share of the
    machine's cores that other processes kept busy meanwhile (0: an idle machine)."""
    figures = []
    start_busy, start_ours = _cpu_seconds()
    started = time.perf_counter()
    for label, arguments, code in COMMANDS:
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            done = subprocess.run([sys.executable, *arguments], capture_output=True, text=True)
            seconds.append(time.perf_counter() - start)
            if done.returncode != code:
                raise RuntimeError(
                    f"{label} exited {done.returncode}, expected {code}: {done.stderr.strip()}"
                )
        figures.append((label, seconds))
    busy, ours = _cpu_seconds()
    wall = time.perf_counter() - started
    others = max(0.0, (busy - start_busy) - (ours - start_ours)) / (wall * (os.cpu_count() or 1))
    return figures, others


def render(
    figures: list[tuple[str, list[float]]], *, others: float, machine: str, repeats: int
) -> str:
    lines = [
        "# Startup: the wait for the first answer",
        "",
        f"Measured by `python -m bench perf --startup --repeats {repeats}` on {machine}, while "
        f"other processes kept {others:.0%} of its cores busy: each command in a fresh process, "
        f"{repeats} times. Goal: an answer to bad input, and `bench list`, under {GOAL_S:.0f} s "
        "on an idle machine.",
        "",
        "| command | median (s) | fastest (s) | under the goal |",
        "|---|---:|---:|---|",
    ]
    for label, seconds in figures:
        median = statistics.median(seconds)
        goal = "" if "import torch" in label else ("yes" if median < GOAL_S else "**no**")
        lines.append(f"| {label} | {median:.2f} | {min(seconds):.2f} | {goal} |")
    return "\n".join(lines) + "\n"
