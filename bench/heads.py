"""Task heads shared by methods: a linear layer per labelled task, the backbone's head for MLM."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from bench.method import Backbone, MethodConfig
from bench.model import Model, Output
from bench.settings import Pair
from bench.task import Kind, Task

IGNORE = -100  # label of positions that carry no loss (padding, non-first sub-tokens, unmasked)


class Heads(nn.Module):
    """Encoder hidden states of a one-pair batch -> logits and a loss for that pair's task."""

    def __init__(
        self,
        tasks: dict[str, Task],
        hidden_size: int,
        *,
        mlm_head: nn.Module | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.kinds = {name: task.kind for name, task in tasks.items()}
        self.dropout = nn.Dropout(dropout)
        self.classifiers = nn.ModuleDict(
            {
                name: nn.Linear(hidden_size, len(task.labels))
                for name, task in tasks.items()
                if task.kind is not Kind.MLM
            }
        )
        if mlm_head is None and Kind.MLM in self.kinds.values():
            raise ValueError("an MLM task needs the backbone's MLM head")
        self.mlm_head = mlm_head

    def forward(self, hidden: torch.Tensor, batch: dict[str, torch.Tensor], task: str) -> Output:
        kind = self.kinds[task]
        labels = batch["labels"]
        if kind is Kind.MLM:
            # Only masked positions need vocabulary logits: the rest of the sequence is skipped.
            masked = labels != IGNORE
            if not masked.any():  # a short batch can draw no mask at all: nothing to learn from
                return Output(hidden.sum() * 0.0, hidden.new_zeros(0, 1))
            # In float32 under bf16 autocast: a bf16 matmul over a vocabulary as wide as e5's
            # (250,002 pieces) takes a slow path on the CPU (one backward: 64 s, not 0.66 s).
            with torch.autocast(hidden.device.type, enabled=False):
                logits = self.mlm_head(hidden[masked].float())
            return Output(F.cross_entropy(logits, labels[masked]), logits)
        if kind is Kind.SENTENCE:
            logits = self.classifiers[task](self.dropout(hidden[:, 0]))
            return Output(F.cross_entropy(logits.float(), labels), logits)
        logits = self.classifiers[task](self.dropout(hidden))
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)
        return Output(loss, logits)


class EncoderWithHeads(Model):
    """The usual model: the backbone's encoder, then a head per task. Methods that change what
    trains (freezing, adapters injected into the backbone) prepare the backbone and build this."""

    def __init__(self, backbone: Backbone, tasks: dict[str, Task], config: MethodConfig) -> None:
        super().__init__()
        self.encoder = backbone.encoder
        mlm_head = backbone.head_for_mlm() if config.mlm else None
        self.heads = Heads(tasks, backbone.hidden_size, mlm_head=mlm_head)

    def forward(self, batch: dict[str, torch.Tensor], pair: Pair) -> Output:
        return self.heads(self.encode(batch), batch, pair.task)

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The encoder's last hidden states."""
        return self.encoder(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
        ).last_hidden_state


class MlmHeadModel(Model):
    """An MLM head trained over a frozen encoder: what a backbone published without one gets
    before methods train MLM through it (the runner's MLM-head stage). The weights the checkpoint
    lacked train (for a BERT-style head: the transform's dense layer and LayerNorm, and the
    decoder's bias); the decoder's weight stays tied to the frozen input embeddings."""

    def __init__(self, backbone: Backbone, tasks: dict[str, Task]) -> None:
        super().__init__()
        backbone.model.requires_grad_(False)
        self.encoder = backbone.encoder
        self.heads = Heads(tasks, backbone.hidden_size, mlm_head=backbone.head_for_mlm())

    def forward(self, batch: dict[str, torch.Tensor], pair: Pair) -> Output:
        with torch.no_grad():  # nothing in the encoder trains: no graph through it
            hidden = self.encoder(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                token_type_ids=batch["token_type_ids"],
            ).last_hidden_state
        return self.heads(hidden, batch, pair.task)
