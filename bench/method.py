"""The method interface: a config, and `build(backbone, plan, tasks, config) -> Model`.

A module in `methods/` registers a `Method` subclass in `METHODS`; nothing else needs editing.
Methods never read files: the runner hands them a loaded backbone and the tasks of the plan.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from optuna.distributions import BaseDistribution, FloatDistribution
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from bench.config import Config, option
from bench.registry import Registry
from bench.settings import ModelPlan, Pair, TrainPair
from bench.task import Task


@dataclasses.dataclass
class Backbone:
    name: str
    model: PreTrainedModel  # a masked-LM model: `.bert` (or equivalent) encoder plus its MLM head
    tokenizer: PreTrainedTokenizerBase
    init: str  # "pretrained" or "random"
    # stage name -> folder of what that stage trained (see `Stage`); empty when only counting
    stages: Mapping[str, Path] = dataclasses.field(default_factory=dict)
    # weights the checkpoint lacked, by name in `model`: an MLM head an encoder was published
    # without (e5) starts random and must train wherever MLM is used
    untrained: frozenset[str] = frozenset()

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def encoder(self) -> nn.Module:
        return self.model.base_model

    @property
    def mlm_head(self) -> nn.Module:
        """The pretrained MLM head: the masked-LM model's one child besides its encoder."""
        prefix = self.model.base_model_prefix
        (head,) = [m for name, m in self.model.named_children() if name != prefix]
        return head

    def head_for_mlm(self) -> nn.Module:
        """The MLM head for a model that trains with MLM: its weights that the checkpoint lacked
        are set to train (a frozen random head would make MLM meaningless), and so are counted.
        Call it after freezing what the method freezes."""
        for name, parameter in self.model.named_parameters(remove_duplicate=False):
            if name in self.untrained:
                parameter.requires_grad_(True)
        return self.mlm_head


@dataclasses.dataclass(frozen=True)
class MethodConfig(Config):
    """Options every method has. Methods subclass it with their own fields."""

    section: ClassVar[str] = "method"

    lr: float = option(5e-4, "peak learning rate of AdamW", gt=0)
    weight_decay: float = option(0.0, "AdamW weight decay", ge=0)
    mlm: bool = option(False, "also train on the plan's MLM languages (unlabelled text)")


@dataclasses.dataclass
class Output:
    loss: torch.Tensor
    logits: torch.Tensor  # token tasks: (batch, seq, labels); sentence: (batch, labels)


class Model(nn.Module, abc.ABC):
    """What a method builds. One (task, language) pair per batch."""

    @abc.abstractmethod
    def forward(self, batch: dict[str, torch.Tensor], pair: Pair) -> Output: ...

    def prepare_eval(self, pair: Pair) -> None:
        """Called before evaluating `pair`; methods that can precompute per pair do it here."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def part(self, name: str) -> str:
        """The part of the model a parameter belongs to, for parameter counts: its top module,
        with LayerNorms apart (methods that train only the LayerNorms of a part show it)."""
        part = name.split(".")[0]
        return f"{part} LayerNorms" if "LayerNorm" in name or "layer_norm" in name else part

    def stage_of(self, name: str) -> str | None:
        """The stage that trained this (now frozen) parameter before the model, if any."""
        return None

    def notes(self) -> dict[str, str]:
        """Facts about how this model was built that a reader of the run must know (a fallback
        taken, say); the runner logs them as run tags."""
        return {}

    def save(self, path: str) -> None:
        """Save the trainable weights (the frozen ones come from the backbone)."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items() if k in names}
        save_file(state, path)

    def load(self, path: str) -> None:
        state = load_file(path)
        result = self.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise ValueError(
                f"checkpoint {path} has unexpected weights {result.unexpected_keys[:3]}"
            )


@dataclasses.dataclass(frozen=True)
class Stage:
    """Something a method trains before its model and reuses across runs: MAD-X's language
    adapters. The runner builds `build(backbone, tasks)` on a fresh backbone, trains it on
    `pairs` for `steps`, lets `save` write it to a folder, and caches that folder under a key of
    the backbone, the data, the budget and `key`; the method's `build` then finds the folder in
    `backbone.stages[name]`. A stage is trained with the seed `seed`, not the run's: the same
    stage serves every seed of a comparison."""

    name: str
    pairs: tuple[TrainPair, ...]
    steps: int
    lr: float
    batch_size: int
    seed: int
    key: Mapping[str, Any]  # everything else that changes what the stage learns (its options)
    build: Callable[[Backbone, dict[str, Task]], Model]
    save: Callable[[Model, Path], None]


class Method(abc.ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    Config: ClassVar[type[MethodConfig]] = MethodConfig

    @classmethod
    def check(cls, plan: ModelPlan, config: MethodConfig) -> None:
        """Raise BenchError if this method cannot run `plan` (called before any run exists)."""
        return None

    @classmethod
    def search_space(cls) -> dict[str, BaseDistribution]:
        """What `bench sweep` searches: option key (`method.lr`, `train.warmup_ratio`) -> an
        Optuna distribution. Methods add their own options to this."""
        return {
            "method.lr": FloatDistribution(1e-5, 1e-2, log=True),
            "train.warmup_ratio": FloatDistribution(0.0, 0.2),
        }

    @classmethod
    def stages(cls, plan: ModelPlan, config: MethodConfig) -> tuple[Stage, ...]:
        """What must be trained before `build` can make the model for `plan`: none by default."""
        return ()

    @classmethod
    @abc.abstractmethod
    def build(
        cls, backbone: Backbone, plan: ModelPlan, tasks: dict[str, Task], config: MethodConfig
    ) -> Model: ...


METHODS: Registry[type[Method]] = Registry("method")


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: register a method under its `name`."""
    METHODS.add(cls.name, cls)
    return cls


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total). `parameters()` yields a shared tensor once: tied weights count once."""
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
