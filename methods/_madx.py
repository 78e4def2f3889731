"""MAD-X's model: what `methods.madx` builds, with `adapters` and torch (loaded on use)."""

from __future__ import annotations

import dataclasses

import adapters
import torch
from adapters import AdapterSetup, SeqBnConfig, SeqBnInvConfig
from adapters.composition import Stack

from bench.heads import EncoderWithHeads
from bench.method import Backbone
from bench.model import Model, Output
from bench.settings import ModelPlan, Pair
from bench.task import Task
from methods.madx import (
    MadxConfig,
    adapters_of,
    lang_name,
    languages_of,
    stage_name,
    task_name,
    with_text,
)  # fmt: skip


def build(backbone: Backbone, plan: ModelPlan, tasks: dict[str, Task], config: MadxConfig) -> Model:
    adapters.init(backbone.model)
    encoder = backbone.encoder
    for language in languages_of(plan):
        if language not in with_text(plan):
            continue
        folder = backbone.stages.get(stage_name(language))
        if folder is None:  # counting parameters: the shape, without the trained weights
            encoder.add_adapter(lang_name(language), config=_lang_config(config))
        else:
            encoder.load_adapter(
                str(folder), load_as=lang_name(language), set_active=False, use_safetensors=True
            )
    for task in tasks:
        reduction = config.task_reduction
        encoder.add_adapter(task_name(task), config=SeqBnConfig(reduction_factor=reduction))
    encoder.train_adapter(Stack(*map(task_name, tasks)))  # freezes the rest of the encoder
    return MadxModel(backbone, tasks, config, adapters_of(plan, config))


class MadxModel(EncoderWithHeads):
    """The frozen encoder with every language adapter and a task adapter per task; each batch
    runs under `Stack(language adapter, task adapter)` for its pair."""

    def __init__(
        self,
        backbone: Backbone,
        tasks: dict[str, Task],
        config: MadxConfig,
        adapter_of: dict[str, str | None],
    ) -> None:
        super().__init__(backbone, tasks, config)
        self.adapter_of = adapter_of  # language -> the language adapter it runs with
        self.missing_text = config.missing_text

    def setup(self, pair: Pair) -> Stack:
        """The adapters that run for `pair`."""
        language = self.adapter_of.get(pair.language, lang_name(pair.language))
        names = [language] if language else []
        return Stack(*names, task_name(pair.task))

    def forward(self, batch: dict[str, torch.Tensor], pair: Pair) -> Output:
        with AdapterSetup(self.setup(pair)):
            return super().forward(batch, pair)

    def part(self, name: str) -> str:
        if ".lang_" in name:
            return "language adapters (MLM)"
        if ".task_" in name:
            return "task adapters"
        return super().part(name)

    def stage_of(self, name: str) -> str | None:
        for piece in name.split("."):
            if piece.startswith("lang_"):
                return stage_name(piece.removeprefix("lang_"))
        return None

    def language_notes(self) -> dict[str, str]:
        return {
            lang: f"no text: {f'ran on {adapter}' if adapter else 'no language adapter'}"
            for lang, adapter in self.adapter_of.items()
            if adapter != lang_name(lang)
        }

    def notes(self) -> dict[str, str]:
        instead = {
            lang: adapter or "none"
            for lang, adapter in self.adapter_of.items()
            if adapter != lang_name(lang)
        }
        if not instead:
            return {}
        return {
            "madx.no_text": " ".join(instead),
            "madx.fallback": ", ".join(f"{lang}: {a}" for lang, a in instead.items()),
        }


class LanguageModel(EncoderWithHeads):
    """A language adapter's MLM training: the invertible adapter runs forward on the embeddings
    (the library's hook) and backward on the last hidden states, before the frozen MLM head."""

    def forward(self, batch: dict[str, torch.Tensor], pair: Pair) -> Output:
        hidden = self.encoder.invertible_adapters_forward(self.encode(batch), rev=True)
        return self.heads(hidden, batch, pair.task)


def language_model(
    language: str, config: MadxConfig, backbone: Backbone, tasks: dict[str, Task]
) -> Model:
    adapters.init(backbone.model)
    backbone.encoder.add_adapter(lang_name(language), config=_lang_config(config))
    backbone.encoder.train_adapter(lang_name(language))  # freezes every other encoder weight
    backbone.mlm_head.requires_grad_(False)  # which leaves the MLM head to freeze: MAD-X does
    return LanguageModel(backbone, tasks, dataclasses.replace(config, mlm=True))


def _lang_config(config: MadxConfig) -> SeqBnInvConfig:
    reduction = config.lang_reduction
    return SeqBnInvConfig(reduction_factor=reduction, inv_adapter_reduction_factor=reduction)
