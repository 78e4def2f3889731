"""The method interface: a config, and `build(backbone, plan, tasks, config) -> Model`.

A module in `methods/` registers a `Method` subclass in `METHODS`; nothing else needs editing.
Methods never read files: the runner hands them a loaded backbone and the tasks of the plan.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from bench.config import Config, option
from bench.registry import Registry
from bench.settings import ModelPlan, Pair
from bench.task import Task


@dataclasses.dataclass
class Backbone:
    name: str
    model: PreTrainedModel  # a masked-LM model: `.bert` (or equivalent) encoder plus its MLM head
    tokenizer: PreTrainedTokenizerBase
    init: str  # "pretrained" or "random"

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


class Method(abc.ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    Config: ClassVar[type[MethodConfig]] = MethodConfig

    @classmethod
    def check(cls, plan: ModelPlan, config: MethodConfig) -> None:
        """Raise BenchError if this method cannot run `plan` (called before any run exists)."""
        return None

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
