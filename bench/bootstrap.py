"""Bootstrap confidence intervals over test examples, for `bench report`.

Every metric of `bench.metrics` is a function of counts summed over the examples: accuracy of
(correct, total) labels (one per example for sentence tasks, one per word for POS, pooled), entity
F1 of (true positive, predicted, gold) entities per sentence, F1 = 2 TP / (predicted + gold). So
a bootstrap replicate (the examples drawn again with replacement) is a weighted sum: how often
each example was drawn, times its counts.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from seqeval.metrics.sequence_labeling import get_entities

LEVEL = 95  # percent, of every interval


def counts(metric: str, gold: list, predictions: list) -> np.ndarray:
    """Per example, the counts whose sums give `bench.metrics.METRICS[metric]`: shape
    (examples, 2) for accuracy, (examples, 3) for f1. Predictions as scored (no None)."""
    if len(gold) != len(predictions):
        raise ValueError(f"{len(gold)} gold against {len(predictions)} predicted examples")
    if metric == "f1":  # entities as seqeval finds them (conlleval rules: I- after O starts one)
        rows = []
        for g, p in zip(gold, predictions, strict=True):
            true, found = set(get_entities(list(g))), set(get_entities(list(p)))
            rows.append((len(true & found), len(found), len(true)))
    elif metric == "accuracy":
        rows = [
            (g == p, 1) if isinstance(g, str) else (_matches(g, p), len(g))
            for g, p in zip(gold, predictions, strict=True)
        ]
    else:
        raise ValueError(f"no per-example decomposition of metric {metric!r}")
    return np.array(rows, dtype=float).reshape(len(rows), 3 if metric == "f1" else 2)


def _matches(gold: list, predicted: list) -> int:
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold against {len(predicted)} predicted tokens")
    return sum(g == p for g, p in zip(gold, predicted, strict=True))


def score(metric: str, sums: np.ndarray) -> np.ndarray:
    """The metric in percent from counts summed over examples (the last axis holds the counts)."""
    if metric == "f1":
        true_positive, found, true = np.moveaxis(sums, -1, 0)
        entities = found + true
        ratio = np.divide(
            2 * true_positive, entities, out=np.zeros_like(entities), where=entities > 0
        )
        return 100.0 * ratio  # no entity predicted or in gold: 0, as seqeval
    correct, total = np.moveaxis(sums, -1, 0)
    return 100.0 * correct / total


def multiplicities(rng: np.random.Generator, examples: int, replicates: int) -> np.ndarray:
    """How often each example is drawn in each replicate, (replicates, examples): a replicate is
    `examples` draws with replacement."""
    draws = rng.integers(0, examples, size=(replicates, examples))
    draws += np.arange(replicates)[:, None] * examples  # each replicate its own bins
    return np.bincount(draws.ravel(), minlength=replicates * examples).reshape(replicates, -1)


def replicate_scores(metric: str, weights: np.ndarray, runs: np.ndarray) -> np.ndarray:
    """The mean over runs (seeds) of each replicate's score, (replicates,): `weights` from
    `multiplicities`, `runs` the counts of every run on the same examples, (runs, examples, k).
    Every run is resampled with the same examples."""
    return score(metric, weights @ runs).mean(axis=0)


@dataclasses.dataclass(frozen=True)
class Estimate:
    point: float
    low: float
    high: float

    @classmethod
    def of(cls, point: float, replicates: np.ndarray) -> Estimate:
        low, high = np.percentile(replicates, [(100 - LEVEL) / 2, (100 + LEVEL) / 2])
        return cls(float(point), float(low), float(high))


@dataclasses.dataclass(frozen=True)
class Difference:
    """A method minus the baseline, on the same resampled examples."""

    estimate: Estimate
    win_rate: float  # replicates in which the method scores higher; ties count half

    @classmethod
    def of(cls, point: float, replicates: np.ndarray) -> Difference:
        wins = np.mean(replicates > 0) + 0.5 * np.mean(replicates == 0)
        return cls(Estimate.of(point, replicates), float(wins))

    @property
    def verdict(self) -> str:
        if self.estimate.low > 0:
            return "better"
        if self.estimate.high < 0:
            return "worse"
        return "not distinguishable"
