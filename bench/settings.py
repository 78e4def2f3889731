"""Settings turn a suite into a Plan: what is trained on, what selects the model, what is evaluated.

The four settings mirror the Hyper-X paper (Figure 1):
- single-task: one model per task, trained on the main source language only;
- multi-task: one model, every task of the main source language;
- mixed: multi-task plus the extra source languages' single tasks; evaluation covers every
  (task, language) pair, so the unseen task-language combinations are targets too;
- few-shot: mixed plus k labelled examples per target pair, drawn with the seed from the target's
  train split; evaluation is on the target's test split, with any shot removed from it.
Model selection always uses the dev split of the labelled training pairs of source languages,
never a target's data. Every language with unlabelled text is an MLM language of the plan;
methods that use MLM (or train on text before, as MAD-X does) train on them.

The runner (runs, sweeps, grids) and `bench plan` check every Plan with the leakage guard
(`bench.leakage.check`) before using it: no test split is trained on, no target pair's labels
are (few-shot: its shots only), only source dev data selects the model, and no trained example
is evaluated or selected on.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Callable, Mapping
from typing import Any

from bench.config import TrainConfig
from bench.errors import BenchError
from bench.registry import Registry
from bench.suites import Suite


@dataclasses.dataclass(frozen=True, order=True)
class Pair:
    task: str
    language: str

    def __str__(self) -> str:
        return f"{self.task}/{self.language}"


@dataclasses.dataclass(frozen=True)
class TrainPair:
    pair: Pair
    split: str
    cap: int | None = None  # at most this many examples (the first `cap` after the indices)
    indices: tuple[int, ...] | None = None  # a fixed subset of the split (few-shot)
    # examples of the split left out (before the cap): their sentences are evaluated
    # (`train.deduplicate`, `bench.overlap`)
    exclude: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class EvalPair:
    pair: Pair
    split: str
    role: str  # "source": labelled in training; "target": not (or only with few shots)
    exclude: tuple[int, ...] = ()  # examples of the split that were trained on


@dataclasses.dataclass(frozen=True)
class ModelPlan:
    name: str
    train: tuple[TrainPair, ...]
    mlm: tuple[TrainPair, ...]
    selection: tuple[EvalPair, ...]
    eval: tuple[EvalPair, ...]

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.pair.task for p in (*self.train, *self.eval)))


@dataclasses.dataclass(frozen=True)
class Plan:
    suite: str
    setting: str
    seed: int
    models: tuple[ModelPlan, ...]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def size(self) -> str:
        """How much a run of it trains and evaluates, in one line."""
        models = len(self.models)
        count = {
            name: sum(len(getattr(m, name)) for m in self.models)
            for name in ("train", "mlm", "selection", "eval")
        }  # fmt: skip
        return (
            f"{models} model{'s' * (models > 1)}; {count['train']} labelled, {count['mlm']} MLM, "
            f"{count['selection']} selection and {count['eval']} test pairs"
        )

    def render(self) -> str:
        lines = [f"Plan: suite {self.suite}, setting {self.setting}, seed {self.seed}"]
        for model in self.models:
            lines.append(f"model {model.name!r}")
            rows = [("train", _by_task(_train_label(t) for t in model.train), model.train)]
            if model.mlm:
                langs = " ".join(t.pair.language for t in model.mlm)
                rows.append(("mlm", f"{langs} (at most {model.mlm[0].cap} sentences each)", ()))
            rows.append(
                ("selection", _by_task(str(e.pair) for e in model.selection), model.selection)
            )
            for role in ("source", "target"):
                pairs = tuple(e for e in model.eval if e.role == role)
                rows.append((f"eval {role}", _by_task(str(e.pair) for e in pairs), pairs))
            for label, text, items in rows:
                splits = sorted({item.split for item in items})
                suffix = f"  [{', '.join(splits)} split]" if splits else ""
                lines.append(f"  {label:<13}{text or '-'}{suffix}")
        return "\n".join(lines)


def oracle_pairs(model: ModelPlan, suite: Suite) -> tuple[EvalPair, ...]:
    """The dev splits of the model's target pairs, where they have one."""
    return tuple(
        EvalPair(e.pair, "dev", "target")
        for e in model.eval
        if e.role == "target" and "dev" in suite.task(e.pair.task).source.splits(e.pair.language)
    )


def _train_label(t: TrainPair) -> str:
    extra = f" ({len(t.indices)} of {t.split})" if t.indices is not None else ""
    extra += f" ({len(t.exclude)} left out: evaluated)" if t.exclude else ""
    return f"{t.pair}{extra}" + (f" (cap {t.cap})" if t.cap is not None else "")


def _by_task(labels) -> str:
    """ "ner/qaa, ner/qab, pos/qaa" -> "ner: qaa qab | pos: qaa"."""
    groups: dict[str, list[str]] = {}
    for label in labels:
        task, _, rest = label.partition("/")
        groups.setdefault(task, []).append(rest)
    return " | ".join(f"{task}: {' '.join(items)}" for task, items in groups.items())


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    description: str
    build: Callable[[Suite, int, TrainConfig], Plan]
    reads: tuple[str, ...] = ()  # train options that this setting alone reads (few-shot: shots)


SETTINGS: Registry[Setting] = Registry("setting")


def _readers(option: str) -> list[str]:
    """The settings that read a train option only some settings read; [] for the others."""
    return [s for s in SETTINGS.names() if option in SETTINGS.get(s).reads]


def ignored(train: Mapping[str, Any], setting: str) -> set[str]:
    """The options of `train` that `setting` ignores because only other settings read them."""
    name = SETTINGS.canonical(setting)
    return {k for k in train if _readers(k) and name not in _readers(k)}


def check_read(train: Mapping[str, Any], settings: list[str]) -> None:
    """Refuses an option asked for (`--shots`, `--set train.X`) that none of `settings` reads: it
    would be logged and do nothing."""
    names = {SETTINGS.canonical(s) for s in settings}
    for option, value in train.items():
        readers = _readers(option)
        if readers and not names & set(readers):
            where = ", ".join(sorted(names))
            raise BenchError(
                f"train.{option}={value} does nothing in setting {where!r}: only "
                f"{', '.join(readers)} reads it (add --setting {readers[0]}, or drop it)"
            )


def _setting(name: str, description: str, reads: tuple[str, ...] = ()):
    """Registers a setting's Plan builder; suites that spell their settings out (`Suite.settings`)
    get the Plan they list instead of the derived one. `reads`: the train options that settings
    other than this one ignore."""

    def decorator(build: Callable[[Suite, int, TrainConfig], Plan]):
        def plan(suite: Suite, seed: int, train: TrainConfig) -> Plan:
            if suite.settings:
                return _spelled_out(suite, name, seed, train)
            return build(suite, seed, train)

        SETTINGS.add(name, Setting(name, description, plan, reads))
        return build

    return decorator


def _spelled_out(suite: Suite, name: str, seed: int, train: TrainConfig) -> Plan:
    """The Plan of a setting the suite lists pair by pair (`Suite.settings`)."""
    spec = suite.settings.get(name)
    if spec is None:
        have = ", ".join(suite.settings)
        raise BenchError(f"suite {suite.name!r} defines the settings {have}; not {name!r}")
    models = []
    for model, items in spec.models.items():
        pairs = [_train_spec(suite, item, train) for item in items]
        tasks = tuple(dict.fromkeys(t.pair.task for t in pairs))
        selection = [
            _select_spec(suite, item)
            for item in spec.select
            if parse_spec(item, "dev")[0].task in tasks
        ] or [
            EvalPair(t.pair, "dev", "source")
            for t in pairs
            if t.split == "train"
            and "dev" in suite.task(t.pair.task).source.splits(t.pair.language)
        ]
        if not selection:
            raise BenchError(
                f"suite {suite.name!r}, setting {name}, model {model}: no dev data of its "
                "training pairs selects the model; list the pairs that do under `select`"
            )
        trained = {t.pair for t in pairs}
        evals = tuple(
            EvalPair(
                Pair(task, lang), "test", "source" if Pair(task, lang) in trained else "target"
            )
            for task in tasks
            for lang in suite.tested_languages(task)
        )
        mlm = tuple(
            TrainPair(Pair("mlm", lang), "train", train.mlm_cap) for lang in suite.text_languages
        )
        models.append(ModelPlan(model, tuple(pairs), mlm, tuple(selection), evals))
    return Plan(suite.name, name, seed, tuple(models))


_SPEC = re.compile(
    r"^(?P<task>[\w-]+)/(?P<lang>[\w-]+)(@(?P<split>\w+)(\[(?P<a>\d*):(?P<b>\d*)\])?)?$"
)


def parse_spec(text: str, default_split: str) -> tuple[Pair, str, slice | None]:
    """`pos/eng@dev[:1800]` -> (Pair("pos", "eng"), "dev", slice(None, 1800))."""
    match = _SPEC.match(text.strip())
    if match is None:
        raise BenchError(
            f"pair {text!r} is invalid; write task/language, task/language@split or "
            "task/language@split[start:stop]"
        )
    a, b = match["a"], match["b"]
    part = None if match["a"] is None else slice(int(a) if a else None, int(b) if b else None)
    return Pair(match["task"], match["lang"]), match["split"] or default_split, part


def _part(suite: Suite, pair: Pair, split: str, part: slice | None) -> tuple[range, range] | None:
    """(the examples a slice keeps, all of the split's), or None when the split is whole."""
    task = suite.task(pair.task)
    if split not in task.source.splits(pair.language):
        have = ", ".join(task.source.splits(pair.language)) or "none"
        raise BenchError(f"pair {pair}@{split}: {pair} has no {split!r} split (it has: {have})")
    if part is None:
        return None
    whole = range(len(task.load(pair.language, split)))
    return whole[part], whole


def _train_spec(suite: Suite, text: str, train: TrainConfig) -> TrainPair:
    pair, split, part = parse_spec(text, "train")
    if split == "test":
        raise BenchError(f"pair {text!r} trains on a test split; the harness never does")
    sliced = _part(suite, pair, split, part)
    return TrainPair(pair, split, train.train_cap, tuple(sliced[0]) if sliced else None)


def _select_spec(suite: Suite, text: str) -> EvalPair:
    pair, split, part = parse_spec(text, "dev")
    if split == "test":
        raise BenchError(f"pair {text!r} selects on a test split; model selection never does")
    sliced = _part(suite, pair, split, part)
    excluded = tuple(sorted(set(sliced[1]) - set(sliced[0]))) if sliced else ()
    return EvalPair(pair, split, "source", excluded)


def _model(
    suite: Suite, name: str, train: list[TrainPair], eval_tasks: tuple[str, ...], train_config
) -> ModelPlan:
    trained = {t.pair for t in train if t.indices is None}
    selection = tuple(EvalPair(t.pair, "dev", "source") for t in train if t.indices is None)
    shots = {t.pair: t.indices for t in train if t.indices is not None}
    evals = []
    for task in eval_tasks:
        for language in suite.tested_languages(task):  # AmericasNLI languages have no POS
            pair = Pair(task, language)
            role = "source" if pair in trained else "target"
            evals.append(EvalPair(pair, "test", role, _excluded(shots.get(pair), "train", "test")))
    mlm = tuple(
        TrainPair(Pair("mlm", lang), "train", train_config.mlm_cap) for lang in suite.text_languages
    )
    return ModelPlan(name, tuple(train), mlm, selection, tuple(evals))


def _excluded(indices: tuple[int, ...] | None, shot_split: str, eval_split: str) -> tuple[int, ...]:
    # Shots come from train and evaluation reads test, so nothing overlaps; the rule stays explicit
    # for suites whose shots and evaluation share a split.
    return tuple(indices) if indices and shot_split == eval_split else ()


def _labelled(pairs, cap: int | None) -> list[TrainPair]:
    return [TrainPair(pair, "train", cap) for pair in pairs]


@_setting("single-task", "one model per task, each trained on the main source language only")
def single_task(suite: Suite, seed: int, train: TrainConfig) -> Plan:
    models = tuple(
        _model(
            suite, task, _labelled([Pair(task, suite.main_source)], train.train_cap), (task,), train
        )
        for task in suite.labelled_tasks
    )
    return Plan(suite.name, "single-task", seed, models)


def _multi_task_pairs(suite: Suite) -> list[Pair]:
    return [Pair(task, suite.main_source) for task in suite.labelled_tasks]


@_setting("multi-task", "one model trained on every task of the main source language")
def multi_task(suite: Suite, seed: int, train: TrainConfig) -> Plan:
    pairs = _labelled(_multi_task_pairs(suite), train.train_cap)
    return Plan(
        suite.name, "multi-task", seed, (_model(suite, "all", pairs, suite.labelled_tasks, train),)
    )


def _mixed_pairs(suite: Suite) -> list[Pair]:
    extra = [Pair(task, language) for language, task in suite.extra_sources.items()]
    return _multi_task_pairs(suite) + extra


@_setting("mixed", "multi-task on the main source plus one task in each extra source language")
def mixed(suite: Suite, seed: int, train: TrainConfig) -> Plan:
    pairs = _labelled(_mixed_pairs(suite), train.train_cap)
    return Plan(
        suite.name, "mixed", seed, (_model(suite, "all", pairs, suite.labelled_tasks, train),)
    )


def zero_text(suite: Suite, seed: int, train: TrainConfig) -> Plan:
    """`mixed` (derived, or as the suite spells it out) without MLM text for the suite's
    `no_text` targets: languages a model meets with neither labels nor text."""
    if not suite.no_text:
        raise BenchError(
            f"setting zero-text: suite {suite.name!r} names no languages without text "
            "(`no_text` in a suite file)"
        )
    models = tuple(
        dataclasses.replace(m, mlm=tuple(t for t in m.mlm if t.pair.language not in suite.no_text))
        for m in SETTINGS.get("mixed").build(suite, seed, train).models
    )
    return Plan(suite.name, "zero-text", seed, models)


SETTINGS.add(
    "zero-text",
    Setting(
        "zero-text", "mixed, with no MLM text for the suite's text-less targets (no_text)",
        zero_text,
    ),
)  # fmt: skip


@_setting(
    "few-shot", "mixed plus k labelled train examples per target pair (train.shots)", ("shots",)
)
def few_shot(suite: Suite, seed: int, train: TrainConfig) -> Plan:
    pairs = _labelled(_mixed_pairs(suite), train.train_cap)
    labelled = {t.pair for t in pairs}
    rng = random.Random(seed)
    for task in suite.labelled_tasks:
        for language in suite.targets:
            pair = Pair(task, language)
            if pair in labelled:
                continue
            size = len(suite.task(task).load(language, "train"))
            k = min(train.shots, size)
            indices = tuple(sorted(rng.sample(range(size), k)))
            pairs.append(TrainPair(pair, "train", None, indices))
    return Plan(
        suite.name, "few-shot", seed, (_model(suite, "all", pairs, suite.labelled_tasks, train),)
    )
