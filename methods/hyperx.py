"""Hyper-X (Üstün et al., EMNLP 2022): one hypernetwork writes every layer's adapter.

A task, a language and a layer embedding (learned, N(0, 1)) are concatenated into a source
embedding, projected (Linear, ReLU, Linear) to `source_dim`, and read by linear generators that
output the adapter's down and up projections with their biases and the gain and bias of a
LayerNorm on the adapter's output (generator weights N(0, 0.01), biases zero). The adapter sits
in every layer's output sub-layer, after the FFN's dense and dropout and before the residual
LayerNorm: `x + LN_generated(up(relu(down(x))))`. It is attached with a forward hook on that
dropout module of the real `transformers` layer; no modeling code is copied.

Trained: the hypernetwork, the encoder's LayerNorms and the task heads. Frozen: every other
encoder weight and the whole pretrained MLM head, whose decoder is tied to the frozen word
embeddings (pitfall 1 of the reference code: an untied copy trained 92 M extra parameters).

Each batch holds one (task, language) pair, so weights are generated once per batch for all
layers at once; at evaluation `prepare_eval` generates them once per pair. A pair never trained
on is served by composing its task and language embeddings; a language with neither labelled
data nor MLM text would get an untrained embedding and is refused unless the user opts in.

`method.language_source` replaces (`typology`) or complements (`both`) the learned language
embedding with the language's typological vector (URIEL, `bench.typology`) through an MLP
(Linear, ReLU, Linear), as UDapter (Üstün et al. 2020) conditions on typology: a language with
no text at all then gets an embedding from its typology alone.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from bench.config import option
from bench.errors import BenchError
from bench.method import Backbone, Method, MethodConfig, register
from bench.settings import ModelPlan

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

    from bench.model import Model
    from bench.task import Task


@dataclasses.dataclass(frozen=True)
class HyperXConfig(MethodConfig):
    lr: float = option(1e-4, "peak learning rate of AdamW (reference: 1e-4)", gt=0)
    mlm: bool = option(True, "train on the plan's MLM languages: how targets get an embedding")
    embedding_dim: int = option(64, "size of the task, language and layer embeddings", gt=0)
    source_dim: int = option(192, "d_s: size of the projected source embedding", gt=0)
    bottleneck: int = option(256, "adapter bottleneck size", gt=0)
    untrained_languages: bool = option(
        False, "evaluate languages with neither labels nor MLM text (untrained embedding)"
    )
    language_source: str = option(
        "learned",
        "the language input: learned (an embedding per language, the paper's), typology (the "
        "language's URIEL vector through an MLP, UDapter's; serves languages with no text) or "
        "both (their sum, the learned part dropped with method.language_dropout in training)",
        choices=("learned", "typology", "both"),
    )
    language_dropout: float = option(
        0.2, "with language_source=both: how often training drops the learned embedding", ge=0, le=1
    )
    projector_init: str = option(
        "pytorch",
        "source projector init: pytorch (torch.nn.Linear's default) or reference (weights "
        "N(0, 0.01), biases zero, as the reference code; it did not learn on e5-small at the "
        "shared suite's lr, see the README)",
        choices=("pytorch", "reference"),
    )


@dataclasses.dataclass(frozen=True)
class HyperXSmallConfig(HyperXConfig):
    source_dim: int = option(32, "d_s: size of the projected source embedding", gt=0)


def embedded_languages(plan: ModelPlan, config: HyperXConfig) -> list[str]:
    """The languages the model embeds: those it trains on, reads MLM text of, or evaluates."""
    pairs = [
        *(t.pair for t in plan.train),
        *(t.pair for t in plan.mlm if config.mlm),
        *(e.pair for e in plan.eval),
    ]
    return sorted({p.language for p in pairs})


def untrained_languages(plan: ModelPlan, config: HyperXConfig) -> list[str]:
    """The evaluated languages with neither labelled data nor MLM text: their learned embeddings
    stay as initialised (with typology, their embedding is typology's alone)."""
    trained = {t.pair.language for t in plan.train}
    if config.mlm:
        trained |= {t.pair.language for t in plan.mlm}
    return sorted({e.pair.language for e in plan.eval} - trained)


@register
class HyperX(Method):
    name = "hyperx"
    description = "Hyper-X: a hypernetwork generates every layer's adapter from task+language"
    Config = HyperXConfig
    variant_options = ("language_source",)

    @classmethod
    def variant_marks(cls, config: HyperXConfig) -> list[str]:
        source = config.language_source
        return [] if source == "learned" else [{"both": "learned+typology"}.get(source, source)]

    @classmethod
    def typology_languages(cls, plan: ModelPlan, config: HyperXConfig) -> list[str]:
        return [] if config.language_source == "learned" else embedded_languages(plan, config)

    @classmethod
    def check(cls, plan: ModelPlan, config: HyperXConfig) -> None:
        if config.untrained_languages or config.language_source != "learned":
            return
        if untrained := untrained_languages(plan, config):
            why = "" if config.mlm else " (method.mlm is off)"
            raise BenchError(
                f"Hyper-X cannot evaluate {', '.join(untrained)}: no labelled data and no MLM "
                f"text{why}, so the language embedding would be untrained; give the language "
                "MLM text, use method.language_source=typology (or both), or set "
                "method.untrained_languages=true to evaluate it anyway"
            )

    @classmethod
    def build(
        cls, backbone: Backbone, plan: ModelPlan, tasks: dict[str, Task], config: HyperXConfig
    ) -> Model:
        from methods._hyperx import HyperXModel

        return HyperXModel(backbone, plan, tasks, config)

    @classmethod
    def search_space(cls) -> dict[str, BaseDistribution]:
        from optuna.distributions import CategoricalDistribution

        return {
            **super().search_space(),
            "method.bottleneck": CategoricalDistribution([32, 64, 128, 256]),
            "method.source_dim": CategoricalDistribution([32, 64, 192]),
        }


@register
class HyperXSmall(HyperX):
    name = "hyperx-small"
    description = "Hyper-X small: d_s = 32"
    Config = HyperXSmallConfig

    @classmethod
    def search_space(cls) -> dict[str, BaseDistribution]:  # d_s stays the preset's
        return {k: v for k, v in super().search_space().items() if k != "method.source_dim"}
