"""Does the shipped backbone transfer? `python -m bench transfer` writes reports/demo/transfer.md.

Full fine-tuning of POS on the main source language, evaluated zero-shot on every language, twice:
on the pretrained demo backbone and on a randomly initialised backbone of the same shape and
tokenizer. Pretraining helps transfer only where the first beats the second, and the word-lookup
baseline (each word's most frequent source tag) tells how much shared word forms alone explain.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from bench import runner
from bench.report import REPORTS
from bench.suites import Suite

REPORT = REPORTS / "demo" / "transfer.md"


def measure(
    output: Path, *, seeds: tuple[int, ...], train: dict, task: str = "pos", method: str = "full-ft"
) -> dict[str, dict[str, list[float]]]:
    """score lists keyed by column ("pretrained", "random", "lookup", "majority"), then language."""
    table: dict[str, dict[str, list[float]]] = {}
    for init in ("pretrained", "random"):
        for seed in seeds:
            request = runner.Request(
                method=method, setting="single-task", seed=seed, output=output,
                backbone_init=init, train=train, tasks=(task,), progress=False,
            )  # fmt: skip
            result = runner.execute(runner.prepare(request))
            for r in result.pairs:
                table.setdefault(init, {}).setdefault(r.language, []).append(r.score)
                if init == "pretrained" and seed == seeds[0]:
                    for name, value in r.references.items():
                        table.setdefault(name, {})[r.language] = [value]
    return table


def render(table: dict[str, dict[str, list[float]]], *, suite: Suite, command: str) -> str:
    columns = ["pretrained", "random", "lookup", "majority"]
    lines = [
        "# Does the demo backbone transfer? (POS, zero-shot from the main source)",
        "",
        f"Regenerate: `{command}`",
        "",
        "Full fine-tuning on the main source's POS training data, accuracy (%) on each language's",
        "test split, mean ± standard deviation over seeds. `random` is the same architecture and",
        "tokenizer with untrained weights; `lookup` tags each word with its most frequent tag in",
        "the source training data. Transfer from pretraining = pretrained - random.",
        "",
        "| language | about | " + " | ".join(columns) + " | pretrained - random |",
        "|---|---|" + "---|" * (len(columns) + 1),
    ]
    for language in table["pretrained"]:
        cells = [_cell(table[c][language]) for c in columns]
        gain = statistics.fmean(table["pretrained"][language]) - statistics.fmean(
            table["random"][language]
        )
        label = f"{language} {suite.language_names.get(language, '')}".strip()
        note = suite.language_notes.get(language, "")
        lines.append(f"| {label} | {note} | " + " | ".join(cells) + f" | {gain:+.1f} |")
    return "\n".join([*lines, "", *_reading(table, suite.main_source)]) + "\n"


def _reading(table: dict[str, dict[str, list[float]]], source: str) -> list[str]:
    """One computed sentence per finding, so that the report never says more than its table."""
    mean = {c: {lang: statistics.fmean(v) for lang, v in table[c].items()} for c in table}
    targets = [lang for lang in mean["pretrained"] if lang != source]

    def listed(languages: list[str], against: str) -> str:
        cells = [
            f"{lang} ({mean['pretrained'][lang] - mean[against][lang]:+.1f})" for lang in languages
        ]
        return ", ".join(cells) or "none"

    transfer = [lang for lang in targets if mean["pretrained"][lang] - mean["random"][lang] >= 5]
    lexical = [lang for lang in targets if mean["pretrained"][lang] <= mean["lookup"][lang]]
    return [
        "Pretraining adds 5 points or more over the random backbone on: "
        f"{listed(transfer, 'random')}.",
        "",
        f"Not above the word lookup (no transfer beyond shared word forms): "
        f"{listed(lexical, 'lookup')}.",
    ]


def _cell(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {statistics.stdev(values):.1f}"
