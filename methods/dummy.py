"""A deliberately tiny method for tests: linear heads over the frozen word embeddings.

No transformer layer runs, so a run takes seconds; it still learns word-level patterns, which is
enough to exercise training, selection, evaluation and logging end to end.
"""

from __future__ import annotations

import torch

from bench.heads import Heads
from bench.method import Backbone, Method, MethodConfig, Model, Output, register
from bench.settings import ModelPlan, Pair
from bench.task import Task


class WordEmbeddingHeads(Model):
    def __init__(self, backbone: Backbone, tasks: dict[str, Task], config: MethodConfig) -> None:
        super().__init__()
        self.embeddings = backbone.model.get_input_embeddings()
        self.embeddings.requires_grad_(False)  # also freezes the tied MLM decoder
        mlm_head = backbone.head_for_mlm() if config.mlm else None
        self.heads = Heads(tasks, backbone.hidden_size, mlm_head=mlm_head)

    def forward(self, batch: dict[str, torch.Tensor], pair: Pair) -> Output:
        return self.heads(self.embeddings(batch["input_ids"]), batch, pair.task)


@register
class Dummy(Method):
    name = "dummy"
    description = "test method: linear heads on frozen word embeddings (seconds per run)"

    @classmethod
    def build(cls, backbone, plan: ModelPlan, tasks, config) -> Model:
        return WordEmbeddingHeads(backbone, tasks, config)
