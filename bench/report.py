"""Tables of results, as printed at the end of `bench run`."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping

from bench.evaluation import PairResult

REFERENCE_ORDER = ("majority", "lookup")


def results_table(results: list[PairResult], names: Mapping[str, str] | None = None) -> str:
    """Scores per (task, language), sources first, then targets and their average, with the
    majority-class and word-lookup references beside every score (in percent)."""
    names = names or {}
    present = {name for r in results for name in r.references}
    refs = [name for name in REFERENCE_ORDER if name in present] + sorted(
        present - set(REFERENCE_ORDER)
    )
    header = ["task", "language", "role", "metric", "score", *refs]
    rows: list[list[str]] = []
    by_task: dict[str, list[PairResult]] = defaultdict(list)
    for r in results:
        by_task[r.task].append(r)
    for task, items in by_task.items():
        items.sort(key=lambda r: (r.role != "source", r.language))
        for r in items:
            language = f"{r.language} {names.get(r.language, '')}".strip()
            values = [_pct(r.references.get(name)) for name in refs]
            rows.append([task, language, r.role, r.metric, _pct(r.score), *values])
        targets = [r for r in items if r.role == "target"]
        if targets:
            averages = [
                _pct(statistics.fmean(r.references[name] for r in targets))
                if all(name in r.references for r in targets)
                else "-"
                for name in refs
            ]
            mean = statistics.fmean(r.score for r in targets)
            rows.append([task, "avg over targets", "", "", _pct(mean), *averages])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [
            cell.rjust(w) if i >= 4 else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
