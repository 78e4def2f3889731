"""Suites: which data sources, languages and backbone a benchmark uses.

A suite names one main source language with labelled data for every task (English in the
paper), extra source languages with labelled data for one task each (the paper's Arabic NER and
Turkish POS), and target languages that have no labelled training data in zero-shot settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bench.config import TrainConfig
from bench.errors import BenchError
from bench.registry import Registry
from bench.task import TASKS, Kind, Source, Task


@dataclasses.dataclass(frozen=True)
class SettingPairs:
    """A setting a suite spells out instead of deriving it from its roles: the training pairs of
    each model, and the pairs that select it. A pair reads `task/language`, with a split
    `task/language@dev`, or a slice of one, `task/language@dev[:600]` (train on the first 600
    of dev, select on `task/language@dev[600:]`). Without `select`, the dev split of every pair
    trained on its train split selects the model."""

    models: Mapping[str, tuple[str, ...]]  # model name -> its training pairs
    select: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    description: str
    backbone: str  # "demo" (the shipped backbone) or a local model folder
    sources: Mapping[str, Source]  # task name -> where its data comes from
    main_source: str
    extra_sources: Mapping[str, str]  # language -> the one task it has labels for
    targets: tuple[str, ...]
    train: TrainConfig  # this suite's default budget
    # method name -> option defaults this suite changes (sizes for a small backbone); they show
    # in the resolved config of every run, and --set overrides them
    method_options: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    language_names: Mapping[str, str] = dataclasses.field(default_factory=dict)
    language_notes: Mapping[str, str] = dataclasses.field(default_factory=dict)  # for reports
    # setting name -> its pairs, for suites that spell settings out (files); empty: settings
    # derive from main_source, extra_sources and targets
    settings: Mapping[str, SettingPairs] = dataclasses.field(default_factory=dict)
    # a language's typological vector in URIEL's layout (`bench.typology`), for suites whose
    # languages URIEL lacks; None: URIEL's
    typology: Callable[[str], tuple[float, ...]] | None = None
    # language -> the code URIEL files its vector under, where the suite's code is not it (a
    # macrolanguage: AmericasNLI's `grn` Guarani is URIEL's Paraguayan `gug`)
    uriel: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # targets the `zero-text` setting gives no MLM text: languages with no text at all
    no_text: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in self.sources:
            TASKS.canonical(name)
        for language, task in self.extra_sources.items():
            if task not in self.labelled_tasks:
                raise ValueError(
                    f"suite {self.name}: extra source {language} has unknown task {task}"
                )

    def task(self, name: str) -> Task:
        family = TASKS.get(name)
        if family.name not in self.sources:
            valid = ", ".join(self.sources)
            raise BenchError(f"suite {self.name!r} has no task {name!r}; it has: {valid}")
        return Task(family, self.sources[family.name])

    def restricted(self, tasks: tuple[str, ...]) -> Suite:
        """This suite with only `tasks` labelled (MLM text stays): `--tasks pos,ner`. An extra
        source whose task is dropped has no labels left, so it is evaluated as a target."""
        keep = {self.task(name).name for name in tasks}
        if not keep - {"mlm"}:
            raise BenchError(f"--tasks {','.join(tasks)!r} names no labelled task")
        extra = {lang: t for lang, t in self.extra_sources.items() if t in keep}
        unlabelled = tuple(lang for lang in self.extra_sources if lang not in extra)
        settings = {
            name: SettingPairs(
                models={
                    model: kept
                    for model, pairs in spec.models.items()
                    if (kept := tuple(p for p in pairs if p.split("/")[0] in keep))
                },
                select=tuple(p for p in spec.select if p.split("/")[0] in keep),
            )
            for name, spec in self.settings.items()
        }
        return dataclasses.replace(
            self,
            sources={n: s for n, s in self.sources.items() if n in keep or n == "mlm"},
            extra_sources=extra,
            targets=(*unlabelled, *self.targets),
            settings=settings,
        )

    @property
    def labelled_tasks(self) -> tuple[str, ...]:
        return tuple(n for n in self.sources if TASKS.get(n).kind is not Kind.MLM)

    @property
    def has_mlm(self) -> bool:
        return any(TASKS.get(n).kind is Kind.MLM for n in self.sources)

    @property
    def languages(self) -> tuple[str, ...]:
        return (self.main_source, *self.extra_sources, *self.targets)

    def tested_languages(self, task: str) -> tuple[str, ...]:
        """The languages with a test split for `task`: the pairs a Plan can evaluate."""
        source = self.task(task).source
        return tuple(lang for lang in self.languages if "test" in source.splits(lang))

    @property
    def text_languages(self) -> tuple[str, ...]:
        """The languages that have unlabelled text: a train split in an MLM source."""
        text = [s for n, s in self.sources.items() if TASKS.get(n).kind is Kind.MLM]
        return tuple(
            lang for lang in self.languages if any("train" in s.splits(lang) for s in text)
        )


SuiteFactory = Callable[[], Suite]
SUITES: Registry[SuiteFactory] = Registry("suite")


def get(name: str) -> Suite:
    """A registered suite by name, or a suite file (`path/to/suite.toml`)."""
    if name.endswith(".toml"):
        from bench import suitefile

        return suitefile.load(Path(name))
    return SUITES.get(name)()


def suite_files() -> list[tuple[str, str]]:
    """(path, description) of the suite files in `suites/` here and beside the package (the
    repository's), read without expanding their variables."""
    import tomllib

    folders = [Path("suites"), Path(__file__).resolve().parent.parent / "suites"]
    found = {}
    for folder in folders:
        for path in sorted(folder.glob("*.toml")):
            if path.resolve() in found.values():
                continue
            try:
                description = str(tomllib.loads(path.read_text()).get("description", ""))
            except (OSError, tomllib.TOMLDecodeError) as error:
                description = f"unreadable: {error}"
            here = path.resolve().is_relative_to(Path.cwd())
            shown = path.resolve().relative_to(Path.cwd()) if here else path.resolve()
            found[(str(shown), description)] = path.resolve()
    return list(found)
