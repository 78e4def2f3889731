"""Suites as TOML files (`--suite path/to/suite.toml`): local data files and a local (or hub)
backbone, for offline clusters and for benchmarks of one's own.

    name = "shared"                         # default: the file's name
    description = "..."
    backbone = "${BENCH_E5_DIR}"            # a model folder (relative to this file) or a hub id

    [train]                                 # the budget: any train.* option
    max_steps = 600

    [method.hyperx]                         # method option defaults for this suite
    bottleneck = 64

    [tasks.ner]
    labels = ["O", "B-PER", "I-PER", ...]   # pos and nli default to UPOS and the 3 NLI labels
    label_map = { B-DATE = "O", I-DATE = "O" }
    files.hau = { train = "...", dev = "...", test = "..." }
    hub.yor = { dataset = "unimelb-nlp/wikiann", config = "yo" }   # a hub dataset (tasks.hub)

    [settings.mixed]                        # the pairs each setting trains and selects on
    train = ["pos/eng@dev[:1800]", "pos/tur", "ner/hau"]
    select = ["pos/eng@dev[1800:]", "pos/tur", "ner/hau"]

Strings may use environment variables (`${BENCH_DATA_DIR}`); languages may be written as ISO
639-1, 639-3 or BCP-47 codes and are ISO 639-3 inside. A setting with several models lists them
as `[settings.single-task.models]`, one list of training pairs per model name.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from bench.config import TrainConfig
from bench.errors import BenchError
from bench.languages import iso639_3
from bench.settings import SETTINGS, parse_spec
from bench.suites import SettingPairs, Suite
from bench.task import TASKS, ByLanguage, Kind, Source
from tasks import formats, hub
from tasks.files import FileSource, is_url
from tasks.hub import HubPart, HubSource

KEYS = (
    "name",
    "description",
    "backbone",
    "train",
    "method",
    "tasks",
    "settings",
    "no_text",
    "uriel",
)
TASK_KEYS = ("labels", "label_map", "files", "hub")
DEFAULT_LABELS = {"pos": formats.UPOS, "nli": formats.NLI_LABELS, "mlm": ()}
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def load(path: Path) -> Suite:
    if not path.is_file():
        raise BenchError(f"suite file {path} does not exist")
    try:
        data = _expand(tomllib.loads(path.read_text(encoding="utf-8")), path)
    except tomllib.TOMLDecodeError as error:
        raise BenchError(f"suite file {path} is not valid TOML: {error}") from None
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise BenchError(
            f"suite file {path}: unknown keys {', '.join(unknown)}; valid: {', '.join(KEYS)}"
        )
    if "backbone" not in data or not data.get("tasks") or not data.get("settings"):
        raise BenchError(f"suite file {path} needs `backbone`, `[tasks.*]` and `[settings.*]`")
    _check_shape(data, path)
    base = path.resolve().parent
    sources = {name: _source(name, spec, base, path) for name, spec in data["tasks"].items()}
    settings = {name: _setting(name, spec, path) for name, spec in data["settings"].items()}
    _check_pairs(settings, data["tasks"], path)
    trained = [
        parse_spec(item, "train")[0].language
        for spec in settings.values()
        for items in spec.models.values()
        for item in items
    ]
    described = [
        iso639_3(lang)
        for spec in data["tasks"].values()
        for lang in [*spec.get("files", {}), *spec.get("hub", {})]
    ]
    languages = list(dict.fromkeys([*trained, *described]))
    return Suite(
        name=str(data.get("name", path.stem)),
        description=str(data.get("description", f"suite file {path}")),
        backbone=_backbone(str(data["backbone"]), base),
        sources=sources,
        main_source=languages[0],
        extra_sources={},
        targets=tuple(languages[1:]),
        train=TrainConfig().with_values(data.get("train", {})),
        method_options=dict(data.get("method", {})),
        settings=settings,
        no_text=tuple(iso639_3(language) for language in data.get("no_text", [])),
        uriel={iso639_3(k): iso639_3(v) for k, v in data.get("uriel", {}).items()},
    )


def _check_shape(data: dict, path: Path) -> None:
    """Tables are tables and lists of labels or pairs are lists of strings: a value of another
    type is named here rather than met later as a crash (or a string read letter by letter)."""

    def need(value: Any, kind: type, key: str) -> None:
        ok = isinstance(value, kind) and (kind is dict or all(isinstance(v, str) for v in value))
        if not ok:
            what = "a table" if kind is dict else "a list of strings"
            raise BenchError(f"suite file {path}: `{key}` must be {what}, not {value!r}")

    for key in ("train", "method", "tasks", "settings", "uriel"):
        need(data.get(key, {}), dict, key)
    for language, code in data.get("uriel", {}).items():
        if not isinstance(code, str):
            raise BenchError(f"suite file {path}: `uriel.{language}` must be a code, not {code!r}")
    need(data.get("no_text", []), list, "no_text")
    for name, spec in data["tasks"].items():
        need(spec, dict, f"tasks.{name}")
        need(spec.get("labels", []), list, f"tasks.{name}.labels")
        for key in ("label_map", "files", "hub"):
            need(spec.get(key, {}), dict, f"tasks.{name}.{key}")
        for language, splits in spec.get("files", {}).items():
            need(splits, dict, f"tasks.{name}.files.{language}")
    for name, spec in data["settings"].items():
        need(spec, dict, f"settings.{name}")
        for key in ("train", "select"):
            need(spec.get(key, []), list, f"settings.{name}.{key}")
        need(spec.get("models", {}), dict, f"settings.{name}.models")
        for model, pairs in spec.get("models", {}).items():
            need(pairs, list, f"settings.{name}.models.{model}")


def _expand(value: Any, path: Path) -> Any:
    """Environment variables in every string; an unset one is an error naming it. A variable
    that starts a string and holds a relative path (`../shared/data`, or a folder that exists
    here) is read from the current directory, as a shell would: only paths written in the file
    itself are read from the file's folder."""
    if isinstance(value, dict):
        return {k: _expand(v, path) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, path) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        name = match[1] or match[2]
        if name not in os.environ:
            raise BenchError(f"suite file {path} uses ${{{name}}}, which is not set")
        text = os.environ[name]
        local = Path(text).expanduser()
        if match.start() == 0 and (text.startswith(".") or local.exists()):
            return os.path.abspath(local)  # a hub id (`org/name`) that is no folder stays one
        return text

    return _VARIABLE.sub(substitute, value)


def _backbone(spec: str, base: Path) -> str:
    """A folder (relative to the suite file) is a path; `org/name` that is no folder, a hub id."""
    candidate = Path(spec) if Path(spec).is_absolute() else base / spec
    if candidate.is_dir() or spec.startswith((".", "/", "~")):
        return str(candidate)
    return spec


def _source(name: str, spec: dict, base: Path, path: Path) -> Source:
    family = TASKS.get(name)
    unknown = sorted(set(spec) - set(TASK_KEYS))
    if unknown:
        raise BenchError(
            f"suite file {path}: [tasks.{name}] has unknown keys {', '.join(unknown)}; "
            f"valid: {', '.join(TASK_KEYS)}"
        )
    labels = tuple(spec.get("labels", DEFAULT_LABELS.get(family.name, ())))
    if family.kind is not Kind.MLM and not labels:
        raise BenchError(f"suite file {path}: [tasks.{name}] needs `labels` (the label set)")
    files: dict[str, dict[str, Path | str]] = {}
    for language, splits in spec.get("files", {}).items():
        code = iso639_3(language)
        if not splits:  # a language named without files: no data, silently, without this
            raise BenchError(
                f"suite file {path}: {name}/{language} lists no files; "
                f'write {{ train = "...", dev = "...", test = "..." }}'
            )
        for split, file in splits.items():
            if is_url(file):
                files.setdefault(code, {})[split] = file
                continue
            file_path = Path(file) if Path(file).is_absolute() else base / file
            if not file_path.is_file():
                raise BenchError(
                    f"suite file {path}: {name}/{language} {split} file {file_path} does not exist"
                )
            files.setdefault(code, {})[split] = file_path
    hub = {
        iso639_3(language): _hub_part(f"{name}/{language}", entry, path)
        for language, entry in spec.get("hub", {}).items()
    }
    if not files and not hub:
        raise BenchError(f"suite file {path}: [tasks.{name}] lists no files and no hub data")
    both = sorted(set(files) & set(hub))
    if both:
        raise BenchError(
            f"suite file {path}: [tasks.{name}] names files and hub data for {', '.join(both)}; "
            "a language reads one of them"
        )
    label_map = spec.get("label_map")
    file_source = FileSource(family.kind, files, labels, label_map) if files else None
    hub_source = HubSource(family.kind, hub, labels, label_map) if hub else None
    if not (file_source and hub_source):
        return file_source or hub_source
    return ByLanguage(dict.fromkeys(files, file_source) | dict.fromkeys(hub, hub_source))


def _hub_part(where: str, entry: Any, path: Path) -> HubPart:
    """`{ dataset = "unimelb-nlp/wikiann", config = "yo", splits = ["test"] }`"""
    if not isinstance(entry, dict) or entry.get("dataset") not in hub.DATASETS:
        valid = ", ".join(hub.DATASETS)
        raise BenchError(
            f"suite file {path}: {where} hub entry {entry!r} needs `dataset`, one of: {valid}"
        )
    unknown = sorted(set(entry) - {"dataset", "config", "splits"})
    if unknown:
        raise BenchError(
            f"suite file {path}: {where} hub entry has unknown keys {', '.join(unknown)}; "
            "valid: dataset, config, splits"
        )
    dataset = hub.DATASETS[entry["dataset"]]
    splits = entry.get("splits")
    if splits is not None:
        bad = sorted(set(splits) - set(dataset.splits))
        if bad:
            raise BenchError(
                f"suite file {path}: {where} splits {', '.join(bad)} are not in "
                f"{dataset.repo}; it has {', '.join(dataset.splits)}"
            )
        splits = tuple(splits)
    return HubPart(dataset, entry.get("config"), splits)


def _setting(name: str, spec: dict, path: Path) -> SettingPairs:
    SETTINGS.get(name)  # an unknown setting name fails here, listing the valid ones
    models = {"all": spec["train"]} if "train" in spec else dict(spec.get("models", {}))
    if not models or not all(models.values()):
        raise BenchError(f"suite file {path}: [settings.{name}] needs `train` or `models`")
    return SettingPairs(
        models={model: tuple(map(_normalise, pairs)) for model, pairs in models.items()},
        select=tuple(map(_normalise, spec.get("select", ()))),
    )


def _check_pairs(settings: dict[str, SettingPairs], tasks: dict, path: Path) -> None:
    """Every pair a setting names reads a language that its task has files or hub data for."""
    for name, spec in settings.items():
        for item in [*(i for items in spec.models.values() for i in items), *spec.select]:
            pair = parse_spec(item, "train")[0]
            if pair.task not in tasks:
                continue  # an unknown task is named where the Plan is built
            task = tasks[pair.task]
            have = [iso639_3(lang) for lang in [*task.get("files", {}), *task.get("hub", {})]]
            if pair.language not in have:
                raise BenchError(
                    f"suite file {path}: [settings.{name}] pair {item!r} names {pair.language}, "
                    f"which has no {pair.task} data (it has: {', '.join(have)})"
                )


def _normalise(item: str) -> str:
    """`pos/en@dev` -> `pos/eng@dev`: pairs name languages as the harness does."""
    task, slash, rest = item.strip().partition("/")
    if not slash:
        return item  # parse_spec names the problem
    language, at, split = rest.partition("@")
    return f"{task}/{iso639_3(language)}{at}{split}"
