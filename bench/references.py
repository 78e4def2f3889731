"""Honest references for every results table: what a score must beat to count as transfer.

- majority: the most frequent label of the task's source training data, predicted everywhere;
- lookup: each word's most frequent tag in the source training data (token tasks only); words
  never seen there get the overall most frequent tag. Beating it means more than shared word forms.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from bench.metrics import METRICS
from bench.task import Kind, Task


class References:
    """Majority-class and word-lookup predictors fitted on one task's training examples."""

    def __init__(self, task: Task, train_rows: Iterable[dict]) -> None:
        self.task = task
        counts: Counter[str] = Counter()
        by_word: dict[str, Counter[str]] = defaultdict(Counter)
        for row in train_rows:
            if task.kind is Kind.TOKEN:
                for word, tag in zip(row["tokens"], row["tags"], strict=True):
                    counts[tag] += 1
                    by_word[word][tag] += 1
            else:
                counts[row["label"]] += 1
        if not counts:
            raise ValueError(f"no training examples to fit references for {task.name}")
        self.majority = counts.most_common(1)[0][0]
        self.lookup = {word: tags.most_common(1)[0][0] for word, tags in by_word.items()}

    def scores(self, rows: Sequence[dict]) -> dict[str, float]:
        metric = METRICS[self.task.family.metric]
        if self.task.kind is Kind.TOKEN:
            gold = [row["tags"] for row in rows]
            majority = [[self.majority] * len(tags) for tags in gold]
            lookup = [[self.lookup.get(w, self.majority) for w in row["tokens"]] for row in rows]
            return {"majority": metric(gold, majority), "lookup": metric(gold, lookup)}
        gold = [row["label"] for row in rows]
        return {"majority": metric(gold, [self.majority] * len(gold))}
