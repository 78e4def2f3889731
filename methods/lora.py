"""LoRA (Hu et al. 2022) with `peft`: low-rank updates of the encoder's attention projections,
shared by every task and language, and a head per task. The rest of the encoder and the MLM head
stay frozen (`peft` freezes everything that is not a LoRA weight)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from bench.config import option
from bench.errors import BenchError
from bench.method import Backbone, Method, MethodConfig, register
from bench.settings import ModelPlan

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

    from bench.model import Model


@dataclasses.dataclass(frozen=True)
class LoraOptions(MethodConfig):
    lr: float = option(1e-3, "peak learning rate of AdamW", gt=0)
    rank: int = option(8, "rank r of each low-rank update", gt=0)
    alpha: float = option(16.0, "scaling: the update is multiplied by alpha / rank", gt=0)
    dropout: float = option(0.1, "dropout on the LoRA path", ge=0, le=1)
    targets: str = option(
        "query,value", "comma-separated names of the linear modules to adapt (peft target_modules)"
    )


@register
class Lora(Method):
    name = "lora"
    description = "LoRA (peft) on the attention projections, shared across tasks, head per task"
    Config = LoraOptions

    @classmethod
    def check(cls, plan: ModelPlan, config: LoraOptions) -> None:
        if not _targets(config):
            raise BenchError(f"method.targets={config.targets!r} names no module")

    @classmethod
    def build(cls, backbone: Backbone, plan: ModelPlan, tasks, config: LoraOptions) -> Model:
        from peft import LoraConfig, get_peft_model

        from bench.heads import EncoderWithHeads

        lora = LoraConfig(
            r=config.rank,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            target_modules=_targets(config),
            bias="none",
        )
        try:  # adapts the model in place: backbone.encoder now holds the LoRA layers
            get_peft_model(backbone.model, lora)
        except ValueError as error:  # peft: no module of that name in the backbone
            raise BenchError(f"method.targets={config.targets!r}: {error}") from None
        return EncoderWithHeads(backbone, tasks, config)

    @classmethod
    def search_space(cls) -> dict[str, BaseDistribution]:
        from optuna.distributions import CategoricalDistribution

        return {**super().search_space(), "method.rank": CategoricalDistribution([4, 8, 16, 32])}


def _targets(config: LoraOptions) -> list[str]:
    return [name.strip() for name in config.targets.split(",") if name.strip()]
