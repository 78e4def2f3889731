"""Tasks and their data sources.

A task family (`pos`, `ner`, `nli`, `mlm`, or a user's) says what kind of prediction it is and
how it is scored; it is registered in `TASKS` by a module in `tasks/`. A source says where a
suite's data for that task comes from. A `Task` binds the two, and is what the rest of the
harness sees.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from bench.errors import BenchError
from bench.registry import Registry

if TYPE_CHECKING:
    import datasets


class Kind(enum.StrEnum):
    TOKEN = "token"  # columns: tokens, tags
    SENTENCE = "sentence"  # columns: premise, hypothesis, label
    MLM = "mlm"  # columns: text


COLUMNS = {
    Kind.TOKEN: ("tokens", "tags"),
    Kind.SENTENCE: ("premise", "hypothesis", "label"),
    Kind.MLM: ("text",),
}


@dataclasses.dataclass(frozen=True)
class TaskFamily:
    name: str
    kind: Kind
    metric: str  # a name in bench.metrics.METRICS; empty for mlm (not scored)
    description: str


TASKS: Registry[TaskFamily] = Registry("task")


class Source(Protocol):
    """Where one task's data comes from in one suite."""

    def labels(self) -> tuple[str, ...]: ...

    def splits(self, language: str) -> tuple[str, ...]: ...

    def load(self, language: str, split: str) -> datasets.Dataset: ...

    def fingerprint(self, language: str, split: str) -> str:
        """Changes whenever the data of (language, split) would change; keys the caches."""
        ...


class ByLanguage:
    """A task whose languages read from different sources: local files for some, a hub
    dataset for others. The sources share the task's label set."""

    def __init__(self, sources: Mapping[str, Source]) -> None:
        self.sources = dict(sources)

    def labels(self) -> tuple[str, ...]:
        return next(iter(self.sources.values())).labels()

    def splits(self, language: str) -> tuple[str, ...]:
        source = self.sources.get(language)
        return source.splits(language) if source else ()

    def load(self, language: str, split: str) -> datasets.Dataset:
        return self.sources[language].load(language, split)

    def fingerprint(self, language: str, split: str) -> str:
        return self.sources[language].fingerprint(language, split)


@dataclasses.dataclass(frozen=True)
class Task:
    family: TaskFamily
    source: Source

    @property
    def name(self) -> str:
        return self.family.name

    @property
    def kind(self) -> Kind:
        return self.family.kind

    @property
    def labels(self) -> tuple[str, ...]:
        return self.source.labels()

    def load(self, language: str, split: str) -> datasets.Dataset:
        available = self.source.splits(language)
        if split not in available:
            have = ", ".join(available) or "none"
            raise BenchError(f"{self.name}/{language} has no {split!r} split (it has: {have})")
        data = self.source.load(language, split)
        missing = [c for c in COLUMNS[self.kind] if c not in data.column_names]
        if missing:
            raise BenchError(f"{self.name}/{language}/{split} lacks columns {missing}")
        return data
