"""MAD-X (Pfeiffer et al. 2020) with the `adapters` library.

Language adapters (`seq_bn_inv`: a bottleneck adapter in every layer and an invertible adapter
on the embeddings, whose inverse feeds the MLM head) are trained by MLM on each language's
unlabelled text over the frozen backbone: one runner stage per language, cached on disk and
reused by every run, seed and setting that needs that language. Task adapters (`seq_bn`), one
per task, then train on the labelled pairs stacked on the frozen adapter of each batch's
language, `Stack(lang_<language>, task_<task>)`; evaluating a pair stacks that pair's language.

A language without unlabelled text has no language adapter. `method.missing_text` says what it
gets instead: `source` (the default) stacks the main source language's adapter, `none` runs the
task adapter alone, `error` refuses the run. The choice is logged on the run (tags `note.*`).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import adapters
import torch
from adapters import AdapterSetup, SeqBnConfig, SeqBnInvConfig
from adapters.composition import Stack
from optuna.distributions import BaseDistribution, CategoricalDistribution

from bench.config import option
from bench.errors import BenchError
from bench.heads import EncoderWithHeads
from bench.method import Backbone, Method, MethodConfig, Model, Output, Stage, register
from bench.settings import ModelPlan, Pair
from bench.task import Task


@dataclasses.dataclass(frozen=True)
class MadxConfig(MethodConfig):
    lr: float = option(1e-4, "peak learning rate of AdamW for the task adapters", gt=0)
    task_reduction: float = option(
        16.0, "task adapter reduction factor: bottleneck = hidden size / this", gt=0
    )
    lang_reduction: float = option(
        2.0, "language adapter reduction factor (its invertible adapter's too)", gt=0
    )
    lang_steps: int = option(20000, "MLM steps per language adapter (MAD-X: 250,000)", gt=0)
    lang_lr: float = option(1e-4, "peak learning rate of the language adapters' MLM", gt=0)
    lang_batch_size: int = option(64, "batch size of the language adapters' MLM", gt=0)
    lang_seed: int = option(
        0, "seed of the language adapters' training (one set serves every run seed)", ge=0
    )
    missing_text: str = option(
        "source",
        "a language without unlabelled text gets the main source's adapter (source), "
        "no language adapter (none), or the run is refused (error)",
        choices=("source", "none", "error"),
    )


@register
class Madx(Method):
    name = "madx"
    description = "MAD-X (adapters): MLM language adapters per language, stacked task adapters"
    Config = MadxConfig

    @classmethod
    def check(cls, plan: ModelPlan, config: MadxConfig) -> None:
        if config.mlm:
            raise BenchError(
                "method.mlm=true is not for madx: its language adapters are trained by MLM "
                "before the task adapters (method.lang_steps)"
            )
        missing = [lang for lang in _languages(plan) if lang not in _with_text(plan)]
        if not missing:
            return
        names = " ".join(missing)
        if config.missing_text == "error":
            raise BenchError(
                f"madx: {names} have no unlabelled text, so no language adapter; "
                "method.missing_text=source or none runs them anyway"
            )
        if config.missing_text == "source" and _source(plan) not in _with_text(plan):
            raise BenchError(
                f"madx: method.missing_text=source, but the main source {_source(plan)} has no "
                "unlabelled text either; use method.missing_text=none"
            )

    @classmethod
    def stages(cls, plan: ModelPlan, config: MadxConfig) -> tuple[Stage, ...]:
        text = {t.pair.language: t for t in plan.mlm}
        return tuple(
            Stage(
                name=_stage(language),
                pairs=(text[language],),
                steps=config.lang_steps,
                lr=config.lang_lr,
                batch_size=config.lang_batch_size,
                seed=config.lang_seed,
                key={"adapter": "seq_bn_inv", "reduction": config.lang_reduction},
                build=functools.partial(_language_model, language, config),
                save=functools.partial(_save_language, language),
            )
            for language in _languages(plan)
            if language in text
        )

    @classmethod
    def search_space(cls) -> dict[str, BaseDistribution]:  # the task adapters: the language
        # adapters are trained once, before any trial, and shared
        reductions = CategoricalDistribution([2.0, 4.0, 8.0, 16.0])
        return {**super().search_space(), "method.task_reduction": reductions}

    @classmethod
    def build(cls, backbone: Backbone, plan: ModelPlan, tasks, config: MadxConfig) -> Model:
        adapters.init(backbone.model)
        encoder = backbone.encoder
        for language in _languages(plan):
            if language not in _with_text(plan):
                continue
            folder = backbone.stages.get(_stage(language))
            if folder is None:  # counting parameters: the shape, without the trained weights
                encoder.add_adapter(_lang(language), config=_lang_config(config))
            else:
                encoder.load_adapter(
                    str(folder), load_as=_lang(language), set_active=False, use_safetensors=True
                )
        for task in tasks:
            reduction = config.task_reduction
            encoder.add_adapter(_task(task), config=SeqBnConfig(reduction_factor=reduction))
        encoder.train_adapter(Stack(*map(_task, tasks)))  # freezes the rest of the encoder
        return MadxModel(backbone, tasks, config, _adapters_of(plan, config))


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
        language = self.adapter_of.get(pair.language, _lang(pair.language))
        names = [language] if language else []
        return Stack(*names, _task(pair.task))

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
                return _stage(piece.removeprefix("lang_"))
        return None

    def notes(self) -> dict[str, str]:
        instead = {
            lang: adapter or "none"
            for lang, adapter in self.adapter_of.items()
            if adapter != _lang(lang)
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


def _language_model(
    language: str, config: MadxConfig, backbone: Backbone, tasks: dict[str, Task]
) -> Model:
    adapters.init(backbone.model)
    backbone.encoder.add_adapter(_lang(language), config=_lang_config(config))
    backbone.encoder.train_adapter(_lang(language))  # freezes every other encoder weight
    backbone.mlm_head.requires_grad_(False)  # which leaves the MLM head to freeze: MAD-X does
    return LanguageModel(backbone, tasks, dataclasses.replace(config, mlm=True))


def _save_language(language: str, model: Model, folder: Path) -> None:
    model.encoder.save_adapter(str(folder), _lang(language), use_safetensors=True)


def _lang_config(config: MadxConfig) -> SeqBnInvConfig:
    reduction = config.lang_reduction
    return SeqBnInvConfig(reduction_factor=reduction, inv_adapter_reduction_factor=reduction)


def _adapters_of(plan: ModelPlan, config: MadxConfig) -> dict[str, str | None]:
    """Language -> the language adapter it runs with (its own when it has text)."""
    instead = _lang(_source(plan)) if config.missing_text == "source" else None
    text = _with_text(plan)
    return {lang: _lang(lang) if lang in text else instead for lang in _languages(plan)}


def _languages(plan: ModelPlan) -> list[str]:
    return list(dict.fromkeys(p.pair.language for p in (*plan.train, *plan.eval)))


def _with_text(plan: ModelPlan) -> set[str]:
    return {t.pair.language for t in plan.mlm}


def _source(plan: ModelPlan) -> str:
    """The main source language: every setting's first training pair is in it."""
    return plan.train[0].pair.language


def _stage(language: str) -> str:
    return f"lang-{language}"


def _lang(language: str) -> str:
    return f"lang_{language}"


def _task(task: str) -> str:
    return f"task_{task}"
