"""Full fine-tuning: one shared encoder, every weight trained, a head per task."""

from __future__ import annotations

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
