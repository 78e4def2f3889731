"""The method interface: a config, and `build(backbone, plan, tasks, config) -> Model`.

A module in `methods/` registers a `Method` subclass in `METHODS`; nothing else needs editing.
Methods never read files: the runner hands them a loaded backbone and the tasks of the plan.

This module loads no heavy library, so that names and options are checked in a blink: a method
module imports torch, `adapters` or `peft` where it builds its model, not at its top. The model
classes live in `bench.model` (`Model`, `Output`), which this module also serves by name.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bench.config import Config, option
from bench.registry import Registry
from bench.settings import ModelPlan, TrainPair

if TYPE_CHECKING:  # the registry lists methods without loading torch or their libraries
    from optuna.distributions import BaseDistribution
    from torch import nn
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from bench.model import Model
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
    # language -> its typological vector (`bench.typology.vector` for the run's suite)
    typology: Callable[[str], Sequence[float]] | None = None

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
    # options that change what the method is, shown in its name where not at their default
    # (`variant_marks`), so that reports keep runs of each apart
    variant_options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def variant_marks(cls, config: MethodConfig) -> list[str]:
        """What the name shows of `variant_options` (their non-default values)."""
        default = cls.Config()
        return [
            str(getattr(config, option))
            for option in cls.variant_options
            if getattr(config, option) != getattr(default, option)
        ]

    @classmethod
    def typology_languages(cls, plan: ModelPlan, config: MethodConfig) -> Sequence[str]:
        """The languages whose typological vectors (`Backbone.typology`) the model will read:
        each must have one, which is checked before a run starts."""
        return ()

    @classmethod
    def check(cls, plan: ModelPlan, config: MethodConfig) -> None:
        """Raise BenchError if this method cannot run `plan` (called before any run exists)."""
        return None

    @classmethod
    def search_space(cls) -> dict[str, BaseDistribution]:
        """What `bench sweep` searches: option key (`method.lr`, `train.warmup_ratio`) -> an
        Optuna distribution. Methods add their own options to this."""
        from optuna.distributions import FloatDistribution

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


def variant(method: type[Method], config: MethodConfig) -> str:
    """How reports name a run's method: its name, marked where the run trains MLM and the
    method by default does not, or the reverse (`adapter (mlm)`: Hyper-X's MLM, without its
    hypernetwork), so that the two are never taken for one another, and with its
    `variant_marks` (`hyperx (typology)`)."""
    marks = [] if config.mlm == method.Config().mlm else ["mlm" if config.mlm else "no mlm"]
    marks += method.variant_marks(config)
    return f"{method.name} ({', '.join(marks)})" if marks else method.name


def __getattr__(name: str):
    """`from bench.method import Model` keeps working: the model classes load on first use."""
    if name in ("Model", "Output"):
        from bench import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
