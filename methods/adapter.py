"""One shared bottleneck adapter (`adapters`' `seq_bn`) over a frozen encoder, a head per task.

No language conditioning: the control for Hyper-X without its hypernetwork. The encoder, its
LayerNorms and the MLM head stay frozen; the adapter and the task heads train.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from bench.config import option
from bench.method import Backbone, Method, MethodConfig, register
from bench.settings import ModelPlan

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

    from bench.model import Model

ADAPTER = "shared"


@dataclasses.dataclass(frozen=True)
class AdapterConfig(MethodConfig):
    lr: float = option(1e-3, "peak learning rate of AdamW", gt=0)
    bottleneck: int = option(64, "adapter bottleneck size (hidden size / reduction factor)", gt=0)


@register
class Adapter(Method):
    name = "adapter"
    description = "one shared bottleneck adapter (adapters seq_bn), frozen encoder, head per task"
    Config = AdapterConfig

    @classmethod
    def build(cls, backbone: Backbone, plan: ModelPlan, tasks, config: AdapterConfig) -> Model:
        import adapters
        from adapters import SeqBnConfig

        from bench.heads import EncoderWithHeads

        adapters.init(backbone.model)
        reduction = backbone.hidden_size / config.bottleneck
        backbone.model.add_adapter(ADAPTER, config=SeqBnConfig(reduction_factor=reduction))
        backbone.model.train_adapter(ADAPTER)  # freezes the encoder, activates the adapter
        backbone.mlm_head.requires_grad_(False)  # and the pretrained MLM head, as Hyper-X does
        return EncoderWithHeads(backbone, tasks, config)

    @classmethod
    def search_space(cls) -> dict[str, BaseDistribution]:
        from optuna.distributions import CategoricalDistribution

        return {
            **super().search_space(),
            "method.bottleneck": CategoricalDistribution([16, 32, 64, 128]),
        }
