"""`python -m bench data check PATH --task T`: parse a local data file as a suite would, and say
what it holds (examples, tokens, labels) and what is wrong with it, line by line."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bench.errors import BenchError
from bench.task import TASKS, Kind
from tasks import formats

SHOWN = 10  # problems and warnings listed in full; the rest are counted


def check(path: Path, task: str) -> tuple[str, formats.Parsed]:
    """The report on `path` read as data of `task`, and what was parsed."""
    family = TASKS.get(task)
    parsed = formats.read(Path(path), family.kind)
    fmt = formats.format_of(Path(path).name, family.kind)
    unit = {Kind.TOKEN: "sentences", Kind.SENTENCE: "examples", Kind.MLM: "lines"}[family.kind]
    lines = [
        f"{path}: {fmt}, read as {family.name}",
        f"{unit} {len(parsed.rows):,}, tokens {_tokens(parsed):,}",
    ]
    labels = _labels(parsed)
    if labels:
        counts = ", ".join(f"{label} {n:,}" for label, n in labels.most_common())
        lines.append(f"labels ({len(labels)}): {counts}")
    for name, items in (("warnings", parsed.warnings), ("problems", parsed.problems)):
        if items:
            lines.append(f"{name} {len(items):,}:")
            lines += [f"  {item}" for item in items[:SHOWN]]
            if len(items) > SHOWN:
                lines.append(f"  ... and {len(items) - SHOWN:,} more")
    return "\n".join(lines), parsed


def _tokens(parsed: formats.Parsed) -> int:
    """Words of token tasks; whitespace-separated tokens of sentences and text."""
    if parsed.kind is Kind.TOKEN:
        return sum(len(row["tokens"]) for row in parsed.rows)
    fields = ("premise", "hypothesis") if parsed.kind is Kind.SENTENCE else ("text",)
    return sum(len(row[f].split()) for row in parsed.rows for f in fields)


def _labels(parsed: formats.Parsed) -> Counter:
    if parsed.kind is Kind.TOKEN:
        return Counter(tag for row in parsed.rows for tag in row["tags"])
    if parsed.kind is Kind.SENTENCE:
        return Counter(row["label"] for row in parsed.rows)
    return Counter()


def fail_if_malformed(path: Path, parsed: formats.Parsed) -> None:
    if parsed.problems:
        first = parsed.problems[0]
        raise BenchError(f"{path} is malformed: {len(parsed.problems)} problems, first {first}")
