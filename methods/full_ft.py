"""Full fine-tuning: one shared encoder, every weight trained, a head per task."""

from __future__ import annotations

import torch

from bench.heads import Heads
from bench.method import Backbone, Method, MethodConfig, Model, Output, register
from bench.settings import ModelPlan, Pair
from bench.task import Task


class FullFineTuning(Model):
    def __init__(self, backbone: Backbone, tasks: dict[str, Task], config: MethodConfig) -> None:
        super().__init__()
        self.encoder = backbone.encoder
        mlm_head = backbone.mlm_head if config.mlm else None
        self.heads = Heads(tasks, backbone.hidden_size, mlm_head=mlm_head)

    def forward(self, batch: dict[str, torch.Tensor], pair: Pair) -> Output:
        hidden = self.encoder(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
        ).last_hidden_state
        return self.heads(hidden, batch, pair.task)


@register
class FullFT(Method):
    name = "full-ft"
    description = "full fine-tuning of the encoder, shared across tasks, one head per task"

    @classmethod
    def build(cls, backbone, plan: ModelPlan, tasks, config) -> Model:
        return FullFineTuning(backbone, tasks, config)
