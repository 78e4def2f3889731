"""Full fine-tuning: one shared encoder, every weight trained, a head per task."""

from __future__ import annotations

from optuna.distributions import BaseDistribution, FloatDistribution

from bench.heads import EncoderWithHeads
from bench.method import Method, Model, register
from bench.settings import ModelPlan


@register
class FullFT(Method):
    name = "full-ft"
    description = "full fine-tuning of the encoder, shared across tasks, one head per task"

    @classmethod
    def build(cls, backbone, plan: ModelPlan, tasks, config) -> Model:
        return EncoderWithHeads(backbone, tasks, config)

    @classmethod
    def search_space(cls) -> dict[str, BaseDistribution]:  # the whole encoder: smaller rates
        return {**super().search_space(), "method.lr": FloatDistribution(1e-6, 1e-3, log=True)}
