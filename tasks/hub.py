"""Hugging Face hub datasets as a task's source: WikiANN, XNLI, MultiNLI, AmericasNLI, Wikipedia.

Every dataset is read with `datasets.load_dataset` at the revision pinned in `DATASETS` (one
table, so that a result names its data). Labels are read by name from the dataset's own
`ClassLabel` features, never by position, and then checked against the suite's label set.

An offline cluster keeps copies of the repositories in a folder named by `BENCH_HUB_MIRROR`,
laid out as the hub lays them out, for example

    huggingface-cli download --repo-type dataset unimelb-nlp/wikiann \\
        --revision <the pinned revision> --local-dir $BENCH_HUB_MIRROR/unimelb-nlp/wikiann

A repository found there is read from there (the same files, so the same loader); any other is
read from the hub, and a run that cannot reach it stops with one line naming it. Offline
(HF_HUB_OFFLINE or HF_DATASETS_OFFLINE set) the hub is never asked: a dataset comes from the
`datasets` cache or a copy, or the run stops with one line naming it and the variable. Wikipedia's
text is streamed, and streaming keeps nothing in the cache: offline, only a copy serves.

UD treebanks are not here: they are CoNLL-U files at a release tag of their GitHub repositories,
read by `tasks.files.FileSource` (`ud_files`). MasakhaNER 2.0 is script-only on the hub; its
GitHub data files are two-column CoNLL, also a `FileSource`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import BenchError
from bench.task import Kind
from tasks.files import as_dataset, mapped_labels

if TYPE_CHECKING:
    import datasets

MIRROR_VARIABLE = "BENCH_HUB_MIRROR"
# The text a Wikipedia article gives MLM: its lines (paragraphs) of at least this many
# characters; shorter ones are headings, list items and captions.
MIN_TEXT_CHARS = 20


@dataclasses.dataclass(frozen=True)
class HubDataset:
    """One hub dataset repository at a pinned revision, and how its columns and splits read."""

    repo: str
    revision: str
    columns: Mapping[str, str]  # harness column -> the dataset's column
    splits: Mapping[str, str]  # harness split -> the dataset's split


_NLI_COLUMNS = {"premise": "premise", "hypothesis": "hypothesis", "label": "label"}
_SPLITS = {"train": "train", "dev": "validation", "test": "test"}

# Revisions: a commit where one is recorded; otherwise the branch this harness was written
# against (`main`), resolved to its commit when a run starts (`_commit`), so that caches and
# fingerprints follow the data; record the commit here once a session with network has it.
# `refs/convert/parquet` is not used: every dataset here is parquet on its main branch.
WIKIANN = HubDataset(
    "unimelb-nlp/wikiann", "main", {"tokens": "tokens", "tags": "ner_tags"}, _SPLITS
)
XNLI = HubDataset("facebook/xnli", "main", _NLI_COLUMNS, _SPLITS)
# MultiNLI has no public test split: its mismatched validation set (other genres) is the test.
MULTI_NLI = HubDataset(
    "nyu-mll/multi_nli",
    "main",
    _NLI_COLUMNS,
    {"train": "train", "dev": "validation_matched", "test": "validation_mismatched"},
)
AMERICAS_NLI = HubDataset(
    "nala-cub/americas_nli", "main", _NLI_COLUMNS, {"dev": "validation", "test": "test"}
)
WIKIPEDIA = HubDataset(
    "wikimedia/wikipedia",
    "b04c8d1ceb2f5cd4588862100d08de323dccfbaa",
    {"text": "text"},
    {"train": "train"},
)
DATASETS = {d.repo: d for d in (WIKIANN, XNLI, MULTI_NLI, AMERICAS_NLI, WIKIPEDIA)}


@dataclasses.dataclass(frozen=True)
class HubPart:
    """What one language reads: a dataset's config, and which of the dataset's splits it has."""

    dataset: HubDataset
    config: str | None
    splits: tuple[str, ...] | None = None  # default: all of the dataset's

    @property
    def available(self) -> tuple[str, ...]:
        return self.splits if self.splits is not None else tuple(self.dataset.splits)


class HubSource:
    """A task's data from hub datasets, one `HubPart` per language (a task may mix datasets:
    NLI reads MultiNLI for English and AmericasNLI for its targets)."""

    def __init__(
        self,
        kind: Kind,
        parts: Mapping[str, HubPart],
        labels: tuple[str, ...] = (),
        label_map: Mapping[str, str] | None = None,
        text_lines: int = 100_000,
    ) -> None:
        self.kind = kind
        self.parts = dict(parts)
        self._labels = tuple(labels)
        self.label_map = dict(label_map or {})
        self.text_lines = text_lines  # MLM: lines streamed per language (train.mlm_cap cuts)
        if kind is not Kind.MLM and not self._labels:
            raise BenchError("a labelled task's hub source needs its label set (`labels`)")

    def labels(self) -> tuple[str, ...]:
        return self._labels

    def splits(self, language: str) -> tuple[str, ...]:
        part = self.parts.get(language)
        return part.available if part else ()

    def load(self, language: str, split: str) -> datasets.Dataset:
        return as_dataset(self._rows(language, split), self.kind)

    def check(self, language: str, split: str) -> None:
        """Raise now if the split cannot be read, for a runner to call before it writes anything.
        Offline the split is read here, from the cache or a copy (`load` then reuses it); the hub
        is not asked, so nothing waits for a network timeout. Online, `load` asks the hub."""
        if _offline():
            self._rows(language, split)

    @functools.cache  # noqa: B019 - a source lives as long as its suite; data is read once
    def _rows(self, language: str, split: str) -> list[dict]:
        part = self.parts[language]
        where = f"{part.dataset.repo} ({part.config or 'default'}, {part.dataset.splits[split]})"
        if self.kind is Kind.MLM:
            articles = _open(part, split, streaming=True)
            return [{"text": line} for line in _text_lines(articles, self.text_lines)]
        data = _open(part, split, streaming=False)
        rows = [_named(row, data.features, part.dataset.columns) for row in data]
        rows = [row for row in rows if row is not None]  # NLI pairs without a gold label
        return mapped_labels(rows, self.kind, self._labels, self.label_map, where)

    def fingerprint(self, language: str, split: str) -> str:
        part = self.parts[language]
        data = part.dataset
        mirror = _mirror(data.repo)
        content = _folder_identity(mirror) if mirror else _commit(data.repo, data.revision)
        key = json.dumps(
            [part.dataset.repo, content, part.config, part.dataset.splits[split],
             self.label_map, self.text_lines if self.kind is Kind.MLM else None],
            sort_keys=True,
        )  # fmt: skip
        return f"hub-{hashlib.sha256(key.encode()).hexdigest()[:24]}"


def _mirror(repo: str) -> Path | None:
    root = os.environ.get(MIRROR_VARIABLE)
    if root and (Path(root) / repo).is_dir():
        return Path(root) / repo
    return None


def _offline() -> str | None:
    """The variable that keeps `datasets` off the hub, if one does (it honours either)."""
    import datasets
    import huggingface_hub

    if huggingface_hub.constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE"
    if datasets.config.HF_HUB_OFFLINE:
        return "HF_DATASETS_OFFLINE"
    return None


def _open(part: HubPart, split: str, streaming: bool):
    import datasets

    dataset = part.dataset
    mirror = _mirror(dataset.repo)
    location = str(mirror) if mirror else dataset.repo
    if mirror:  # `datasets` keys a folder's cache by its name, not its content: we key it
        cache = Path(datasets.config.HF_DATASETS_CACHE) / "bench-mirror" / _folder_identity(mirror)
        where = {"cache_dir": str(cache)}
    else:
        where = {"revision": _commit(dataset.repo, dataset.revision)}
    try:
        return datasets.load_dataset(
            location, name=part.config, split=dataset.splits[split], streaming=streaming, **where
        )
    except (ConnectionError, FileNotFoundError, ValueError) as error:
        # offline: ConnectionError; no such config or split: ValueError; no such repo: an
        # OSError or DatasetNotFoundError (a FileNotFoundError)
        name = f"{dataset.repo} ({part.config or 'default'}, {dataset.splits[split]})"
        if (offline := _offline()) and not mirror:
            way_out = (
                "streamed text is never cached, so put a copy"  # a run online would not help
                if streaming
                else "run once where the hub can be reached, or put a copy"
            )
            raise BenchError(
                f"hub dataset {name} cannot be read: it is not in the local `datasets` cache "
                f"({type(error).__name__}) and {offline} is set, so the hub is not asked; "
                f"{way_out} under ${MIRROR_VARIABLE}/{dataset.repo}"
            ) from None
        raise BenchError(
            f"hub dataset {name} cannot be read from {location} "
            f"({type(error).__name__}: {str(error)[:120]}); "
            f"reach the hub, or put a copy under ${MIRROR_VARIABLE}/{dataset.repo}"
        ) from None


@functools.cache
def _commit(repo: str, revision: str) -> str:
    """The commit a revision names: itself if it is one; else resolved once per process where
    the hub can be reached, so that data read at a branch is keyed (and cached) by its commit.
    Offline, `datasets` reads the branch from its cache."""
    if re.fullmatch(r"[0-9a-f]{40}", revision) or _offline():
        return revision
    import huggingface_hub

    try:
        info = huggingface_hub.HfApi().dataset_info(repo, revision=revision)
    except (OSError, ValueError):  # unreachable: the load that follows names the problem
        return revision
    return info.sha or revision


def _named(row: dict, features, columns: Mapping[str, str]) -> dict | None:
    """A row in the harness's columns, with class indices turned into the dataset's names."""
    import datasets

    out = {}
    for ours, theirs in columns.items():
        value, feature = row[theirs], features[theirs]
        inner = getattr(feature, "feature", None)  # a sequence's element feature
        if isinstance(inner, datasets.ClassLabel):
            value = [inner.int2str(v) for v in value]
        elif isinstance(feature, datasets.ClassLabel):
            if value < 0:  # -1: annotators did not agree
                return None
            value = feature.int2str(value)
        out[ours] = value
    return out


def _text_lines(articles: Iterable[dict], limit: int) -> list[str]:
    lines = []
    for article in articles:
        for line in article["text"].split("\n"):
            line = " ".join(line.split())
            if len(line) >= MIN_TEXT_CHARS:
                lines.append(line)
                if len(lines) == limit:
                    return lines
    return lines


@functools.cache
def _folder_identity(folder: Path) -> str:
    """A local copy's identity: its files' names, sizes and times."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)} {stat.st_size} {stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def ud_files(treebanks: Mapping[str, tuple[str, str, tuple[str, ...]]], tag: str) -> dict:
    """`FileSource` files of UD treebanks at release `tag`: language -> (GitHub repository,
    file prefix, splits), e.g. `"eng": ("UD_English-EWT", "en_ewt", ("train", "dev", "test"))`."""
    base = "https://raw.githubusercontent.com/UniversalDependencies"
    return {
        language: {split: f"{base}/{repo}/{tag}/{prefix}-ud-{split}.conllu" for split in splits}
        for language, (repo, prefix, splits) in treebanks.items()
    }
