"""The dummy method's model, with torch (loaded on use)."""

from __future__ import annotations

import torch

from bench.heads import Heads
from bench.method import Backbone, MethodConfig
from bench.model import Model, Output
from bench.settings import Pair
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
