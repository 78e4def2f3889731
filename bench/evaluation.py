"""Evaluation of one pair: predictions per example, the task's metric, and the references."""

from __future__ import annotations

import dataclasses
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch

from bench.config import TrainConfig
from bench.data import Collator, PairData
from bench.metrics import METRICS
from bench.model import Model
from bench.references import References
from bench.settings import EvalPair
from bench.task import Kind, Task


@dataclasses.dataclass
class PairResult:
    task: str
    language: str
    split: str
    role: str
    model: str
    metric: str
    score: float
    references: dict[str, float]
    predictions: list  # per example: a label, or a list of labels (one per word)
    gold: list


def cpu_flags() -> str:
    """The CPU's bfloat16 features (avx512_bf16, amx_bf16), as the kernel lists them."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = next(
        (line.split(":")[1].split() for line in cpuinfo.read_text().splitlines()
         if line.startswith("flags")),
        [],
    ) if cpuinfo.exists() else []  # fmt: skip
    found = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return ", ".join(found) or "none"


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """Where `train.precision` is bf16, the forward pass computes in bfloat16 where autocast
    deems it safe (matrix products) and in float32 elsewhere; the weights stay float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def predict(
    model: Model,
    task: Task,
    data: PairData,
    collator: Collator,
    batch_size: int,
    precision: str = "fp32",
) -> list:
    """Predicted labels per example: a label, or for a token task a label per word. A token
    task's evaluation data holds windows (`bench.data.load_pair(windows=True)`), each of which
    predicts its own words; a word no window predicts (none of its sub-words survived
    tokenisation) gets None."""
    model.eval()
    model.prepare_eval(data.pair)
    columns = data.columns
    predictions: list
    if task.kind is Kind.TOKEN:
        predictions = [[None] * len(tokens) for tokens in data.row_columns["tokens"]]
    else:
        predictions = [None] * len(data)
    # Batches of similar lengths waste little on padding; predictions go back to their order.
    order = sorted(range(len(data)), key=lambda i: len(columns["input_ids"][i]))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            batch = collator(data.examples(indices), task.kind)
            with autocast(precision, batch["input_ids"].device):
                logits = model(batch, data.pair).logits
            ids = logits.argmax(-1).cpu().tolist()
            if task.kind is Kind.SENTENCE:
                for index, label in zip(indices, ids, strict=True):
                    predictions[index] = task.labels[label]
                continue
            for row, index in zip(ids, indices, strict=True):
                words = predictions[columns["example"][index]]
                for word, label in zip(columns["words"][index], row, strict=False):
                    if word >= 0:
                        words[word] = task.labels[label]
    return predictions


def evaluate(
    model: Model,
    task: Task,
    data: PairData,
    pair: EvalPair,
    references: References | None,
    train: TrainConfig,
    model_name: str,
    collator: Collator,
) -> PairResult:
    predictions = predict(model, task, data, collator, train.eval_batch_size, train.precision)
    column = "tags" if task.kind is Kind.TOKEN else "label"
    gold = list(data.row_columns[column])
    score = METRICS[task.family.metric](gold, scored(predictions, task.labels))
    refs = references.scores(data.row_list) if references is not None else {}
    return PairResult(
        task.name, pair.pair.language, pair.split, pair.role, model_name,
        task.family.metric, score, refs, predictions, gold,
    )  # fmt: skip


def scored(predictions: list, labels: Sequence[str]) -> list:
    """Predictions as the metric reads them: a word with no prediction (None) counts as wrong,
    "O" for NER (a missed entity), else no label."""
    fallback = "O" if "O" in labels else ""
    return [
        [fallback if p is None else p for p in pred] if isinstance(pred, list) else pred
        for pred in predictions
    ]


def summarize(results: list[PairResult]) -> dict[str, float]:
    """MLflow metrics: a score per eval pair, the references, and averages over target pairs."""
    metrics: dict[str, float] = {}
    roles: dict[tuple[str, str], list[PairResult]] = defaultdict(list)
    for r in results:
        metrics[f"eval/{r.task}/{r.language}/{r.metric}"] = r.score
        for name, value in r.references.items():
            metrics[f"reference/{name}/{r.task}/{r.language}/{r.metric}"] = value
        roles[(r.task, r.role)].append(r)
    for (task, role), rows in roles.items():
        metrics[f"eval/{task}/avg_{role}"] = statistics.fmean(r.score for r in rows)
        for name in rows[0].references:
            values = [r.references[name] for r in rows]
            metrics[f"reference/{name}/{task}/avg_{role}"] = statistics.fmean(values)
    return metrics


def not_learned(results: list[PairResult]) -> list[str]:
    """The source pairs whose test score does not beat the majority reference: a model that
    did not learn its own training pairs (`task/language score <= majority` each)."""
    return [
        f"{r.task}/{r.language} {r.score:.1f} <= {r.references['majority']:.1f}"
        for r in results
        if r.role == "source" and "majority" in r.references
        and r.score <= r.references["majority"]
    ]  # fmt: skip
