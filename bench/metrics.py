"""Scores, in percent. NER: seqeval entity-level F1; POS and NLI: accuracy."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from seqeval.metrics import f1_score

Labels = Sequence[str] | Sequence[Sequence[str]]


def accuracy(gold: Labels, pred: Labels) -> float:
    """Accuracy over sentences (flat labels) or over tokens (lists of labels per sentence)."""
    pairs = list(_flatten(gold, pred))
    if not pairs:
        raise ValueError("accuracy of an empty evaluation set")
    return 100.0 * sum(g == p for g, p in pairs) / len(pairs)


def entity_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> float:
    """Entity-level F1 (conlleval rules, as seqeval's default mode)."""
    return 100.0 * float(f1_score([list(g) for g in gold], [list(p) for p in pred]))


METRICS: dict[str, Callable[[Labels, Labels], float]] = {"accuracy": accuracy, "f1": entity_f1}


def _flatten(gold: Labels, pred: Labels):
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold against {len(pred)} predicted examples")
    for g, p in zip(gold, pred, strict=True):
        if isinstance(g, str):
            yield g, p
        else:
            if len(g) != len(p):
                raise ValueError(f"{len(g)} gold against {len(p)} predicted tokens")
            yield from zip(g, p, strict=True)
