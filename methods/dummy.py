"""A deliberately tiny method for tests: linear heads over the frozen word embeddings.

No transformer layer runs, so a run takes seconds; it still learns word-level patterns, which is
enough to exercise training, selection, evaluation and logging end to end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.method import Method, register
from bench.settings import ModelPlan

if TYPE_CHECKING:
    from bench.model import Model


@register
class Dummy(Method):
    name = "dummy"
    description = "test method: linear heads on frozen word embeddings (seconds per run)"

    @classmethod
    def build(cls, backbone, plan: ModelPlan, tasks, config) -> Model:
        from methods._dummy import WordEmbeddingHeads

        return WordEmbeddingHeads(backbone, tasks, config)
