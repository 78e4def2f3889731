"""Zero-shot model selection: which weights a run evaluates, and the oracle kept apart.

`train.selection` chooses the weights of each model that its test pairs are evaluated with:
- `source-dev`: the checkpoint with the best mean score on the source pairs' dev splits;
- `last`: the final weights;
- `average`: the uniform average of the trainable weights at every evaluation point (every
  `train.eval_every` counted steps, and the last step), as in Schmidt et al. (ACL 2023). The
  frozen weights are the same at every point and are not stored; Hyper-X averages its
  hypernetwork, not the adapters it generates.

`train.also_selection` tests other rules' weights of the same training, each logged as a run of
its own (`bench.runner.same_training_run`).

`train.oracle` (`--oracle`) also scores every checkpoint on the dev splits of the target pairs
that have one. Each target pair then gets the test score of the checkpoint its own dev split
picks, logged under `oracle/`: an upper bound that reads target data (Keung et al., EMNLP 2020),
never used for `eval/...`, `select/score` or a sweep's objective. Over the checkpoints it also
logs how well source dev tracks the targets: the Spearman correlation of the source dev score
with the mean target dev score, and how much mean target dev score the source-dev choice gives
up against the best checkpoint.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bench.model import Model


def trainable_state(model: Model) -> dict[str, torch.Tensor]:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach() for k, v in model.state_dict().items() if k in names}


def _write(state: dict[str, torch.Tensor], path: Path) -> None:
    partial = path.with_name(path.name + ".partial")
    save_file({k: v.contiguous() for k, v in state.items()}, str(partial))
    os.replace(partial, path)


class Average:
    """The running sum of a model's trainable weights over its evaluation points, on disk beside
    its best weights: `<model>.sum-<n>.safetensors` holds the first n points. The count lives in
    the run's checkpoint, so a resumed run reads the sum its checkpoint counted, and adding a
    point again after an interrupt rewrites the same file."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder, self.name = folder, name

    def path(self, points: int) -> Path:
        return self.folder / f"{self.name}.sum-{points}.safetensors"

    def add(self, model: Model, points: int) -> int:
        """Adds the model's weights to the sum of `points` points; returns the new count."""
        state = {k: v.double() for k, v in trainable_state(model).items()}
        if points:
            for key, value in load_file(str(self.path(points))).items():
                state[key] += value
        _write(state, self.path(points + 1))
        return points + 1

    def mean(self, points: int) -> dict[str, torch.Tensor]:
        """The average of `points` points, in the dtypes of the model's weights."""
        return {k: v / points for k, v in load_file(str(self.path(points))).items()}

    def apply(self, model: Model, points: int) -> None:
        state = trainable_state(model)
        averaged = {k: v.to(state[k].dtype) for k, v in self.mean(points).items()}
        model.load_state_dict(averaged, strict=False)


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rank correlation (ties get their mean rank); None with fewer than 3 points or
    a constant series."""
    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    return statistics.correlation(_ranks(xs), _ranks(ys))


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def curve_metrics(name: str, curve: list[list]) -> dict[str, float]:
    """From a model's (step, source dev score, mean target dev score) points: the Spearman
    correlation of the two scores, and the gap in mean target dev score between the best
    checkpoint and the one source dev picks (the first best, as training keeps it)."""
    points = [p for p in curve if p[2] is not None]
    if not points:
        return {}
    picked = max(points, key=lambda p: p[1])  # max keeps the first of equal scores
    metrics = {
        f"oracle/{name}/selection_gap": max(p[2] for p in points) - picked[2],
        f"oracle/{name}/checkpoints": len(points),
    }
    rho = spearman([p[1] for p in points], [p[2] for p in points])
    if rho is not None:
        metrics[f"oracle/{name}/spearman"] = rho
    return metrics


def spare_weights(folder: Path) -> None:
    """Removes what selection kept while a run trained: the running sums of `average`, the
    oracle's checkpoints and the other rules' weights, which their runs have taken (a finished
    run keeps only each model's evaluated weights)."""
    for pattern in ("*.sum-*.safetensors", "*.oracle-*.safetensors", "*.rule-*.safetensors"):
        for path in folder.glob(pattern):
            path.unlink()
