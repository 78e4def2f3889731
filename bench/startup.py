"""`python -m bench perf --startup`: how long a user waits for the harness's first answer.

Each command runs in a fresh Python process, as a user types it, several times; the table gives
the median and the fastest wall time, beside `import torch` alone for scale. Names, flags,
options and files are checked before torch, `transformers`, `datasets`, `mlflow` and `optuna`
load, so a typo is answered in a fraction of the time a run needs to start.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

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


def measure(repeats: int) -> list[tuple[str, list[float]]]:
    """Wall seconds of each command, `repeats` times, in fresh processes."""
    figures = []
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
    return figures


def render(figures: list[tuple[str, list[float]]], *, machine: str, repeats: int) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        "# Startup: the wait for the first answer",
        "",
        f"Measured by `python -m bench perf --startup --repeats {repeats}` on {machine}, "
        f"load average {load} (1, 5, 15 min) when it ended: each command in a fresh process, "
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
