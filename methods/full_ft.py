"""Full fine-tuning: one shared encoder, every weight trained, a head per task."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.method import Method, register
from bench.settings import ModelPlan

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

    from bench.model import Model


@register
class FullFT(Method):
    name = "full-ft"
    description = "full fine-tuning of the encoder, shared across tasks, one head per task"

    @classmethod
    def build(cls, backbone, plan: ModelPlan, tasks, config) -> Model:
        from bench.heads import EncoderWithHeads

        return EncoderWithHeads(backbone, tasks, config)

    @classmethod
    def search_space(cls) -> dict[str, BaseDistribution]:  # the whole encoder: smaller rates
        from optuna.distributions import FloatDistribution

        return {**super().search_space(), "method.lr": FloatDistribution(1e-6, 1e-3, log=True)}
