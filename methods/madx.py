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
from typing import TYPE_CHECKING

from bench.config import option
from bench.errors import BenchError
from bench.method import Backbone, Method, MethodConfig, Stage, register
from bench.settings import ModelPlan

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

    from bench.model import Model


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
        missing = [lang for lang in languages_of(plan) if lang not in with_text(plan)]
        if not missing:
            return
        names = " ".join(missing)
        if config.missing_text == "error":
            raise BenchError(
                f"madx: {names} have no unlabelled text, so no language adapter; "
                "method.missing_text=source or none runs them anyway"
            )
        if config.missing_text == "source" and main_source(plan) not in with_text(plan):
            raise BenchError(
                f"madx: method.missing_text=source, but the main source {main_source(plan)} has no "
                "unlabelled text either; use method.missing_text=none"
            )

    @classmethod
    def stages(cls, plan: ModelPlan, config: MadxConfig) -> tuple[Stage, ...]:
        text = {t.pair.language: t for t in plan.mlm}
        return tuple(
            Stage(
                name=stage_name(language),
                pairs=(text[language],),
                steps=config.lang_steps,
                lr=config.lang_lr,
                batch_size=config.lang_batch_size,
                seed=config.lang_seed,
                key={"adapter": "seq_bn_inv", "reduction": config.lang_reduction},
                build=functools.partial(_language_model, language, config),
                save=functools.partial(_save_language, language),
            )
            for language in languages_of(plan)
            if language in text
        )

    @classmethod
    def search_space(cls) -> dict[str, BaseDistribution]:  # the task adapters: the language
        # adapters are trained once, before any trial, and shared
        from optuna.distributions import CategoricalDistribution

        reductions = CategoricalDistribution([2.0, 4.0, 8.0, 16.0])
        return {**super().search_space(), "method.task_reduction": reductions}

    @classmethod
    def build(cls, backbone: Backbone, plan: ModelPlan, tasks, config: MadxConfig) -> Model:
        from methods._madx import build

        return build(backbone, plan, tasks, config)


def _language_model(language: str, config: MadxConfig, backbone: Backbone, tasks) -> Model:
    from methods._madx import language_model

    return language_model(language, config, backbone, tasks)


def _save_language(language: str, model: Model, folder) -> None:
    model.encoder.save_adapter(str(folder), lang_name(language), use_safetensors=True)


def adapters_of(plan: ModelPlan, config: MadxConfig) -> dict[str, str | None]:
    """Language -> the language adapter it runs with (its own when it has text)."""
    instead = lang_name(main_source(plan)) if config.missing_text == "source" else None
    text = with_text(plan)
    return {lang: lang_name(lang) if lang in text else instead for lang in languages_of(plan)}


def languages_of(plan: ModelPlan) -> list[str]:
    return list(dict.fromkeys(p.pair.language for p in (*plan.train, *plan.eval)))


def with_text(plan: ModelPlan) -> set[str]:
    return {t.pair.language for t in plan.mlm}


def main_source(plan: ModelPlan) -> str:
    """The main source language: every setting's first training pair is in it."""
    return plan.train[0].pair.language


def stage_name(language: str) -> str:
    return f"lang-{language}"


def lang_name(language: str) -> str:
    return f"lang_{language}"


def task_name(task: str) -> str:
    return f"task_{task}"
