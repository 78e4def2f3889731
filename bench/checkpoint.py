"""Checkpoints that `bench run --resume RUN_ID` continues from.

A run keeps its latest checkpoint in `<output>/checkpoints/<run_id>/resume/`. It writes one after
each model-selection evaluation, when it is interrupted (Ctrl-C, SIGTERM), and when one of its
models is trained and evaluated. A checkpoint is a numbered folder:
- `progress.json`: where the run stands (which model, which step) and what it has done so far;
- `weights.safetensors`: the trainable weights of the model in training;
- `state.pt`: the optimizer, scheduler, pair sampler and random generators, tensors and plain
  values only, read back with `torch.load(weights_only=True)`: loading a checkpoint runs no code.
The folder is written whole, then the file `latest` is replaced to name it, then older folders are
removed: a crash while writing leaves the previous checkpoint in force.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from bench.data import Collator, PairSampler
from bench.errors import BenchError
from bench.tracking import first_line

VERSION = 1
PROGRESS, WEIGHTS, STATE, LATEST = "progress.json", "weights.safetensors", "state.pt", "latest"


@dataclasses.dataclass
class Checkpoint:
    folder: Path
    progress: dict[str, Any]
    state: dict[str, Any] | None  # of the model in training; None once its training ended
    weights: Path | None  # its trainable weights, for `Model.load`


class Checkpoints:
    """The checkpoints of one run, in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def save(self, progress: dict[str, Any], model=None, state: dict | None = None) -> Path:
        """Writes a checkpoint of `progress` and, while a model trains, its weights and the
        training state (`training_state`); returns its folder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        number = max((int(p.name) for p in self.folder.iterdir() if p.name.isdigit()), default=0)
        target = self.folder / str(number + 1)
        partial = self.folder / f"{number + 1}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        (partial / PROGRESS).write_text(json.dumps({"version": VERSION, **progress}))
        if model is not None:
            model.save(str(partial / WEIGHTS))
        if state is not None:
            torch.save(state, partial / STATE)
        partial.rename(target)
        pointer = self.folder / f"{LATEST}.partial"
        pointer.write_text(target.name)
        os.replace(pointer, self.folder / LATEST)
        for old in self.folder.iterdir():
            if old != target and old.name != LATEST:
                shutil.rmtree(old, ignore_errors=True)
        return target

    def latest(self) -> Checkpoint | None:
        """The checkpoint in force, or None if there is none; BenchError if it cannot be read
        (a truncated or foreign file, another version)."""
        pointer = self.folder / LATEST
        if not pointer.exists():
            return None
        folder = self.folder / pointer.read_text().strip()
        try:
            progress = json.loads((folder / PROGRESS).read_text())
            if progress.get("version") != VERSION:
                raise ValueError(f"version {progress.get('version')!r}, not {VERSION}")
            state = weights = None
            if (folder / STATE).exists() or (folder / WEIGHTS).exists():
                state = torch.load(folder / STATE, map_location="cpu", weights_only=True)
                weights = folder / WEIGHTS
                with safe_open(weights, "pt"):  # checks the header against the file's size
                    pass
        except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError,
                SafetensorError) as error:  # fmt: skip
            raise BenchError(
                f"checkpoint {folder} is unreadable ({type(error).__name__}: "
                f"{first_line(error)}); it cannot be resumed, start a new run"
            ) from None
        return Checkpoint(folder, progress, state, weights)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def training_state(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    sampler: PairSampler,
    collator: Collator,
) -> dict[str, Any]:
    """Everything besides the weights that decides how training goes on: with it restored, a
    resumed run takes the same steps as one never stopped (on the same hardware)."""
    return {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "sampler": sampler.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),  # dropout
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
            "masking": collator.rng_state(),
        },
    }


def restore(
    state: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    sampler: PairSampler,
    collator: Collator,
) -> None:
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    sampler.load_state_dict(state["sampler"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    random.setstate(rng["python"])
    collator.set_rng_state(rng["masking"])
