"""Data files as a task's source: one file per (language, split), read by `tasks.formats`.

This is how suites run on an offline cluster: the files are the originals (CoNLL-U treebanks,
two-column NER files, NLI TSV, plain text), and a suite names them. A file may also be a URL
that pins its content (a repository at a release tag, such as UD's `r2.15`): it is downloaded
once into the `datasets` cache, and a run without network names the URL and the way out.

A label outside the task's label set is an error naming the file, unless the suite maps it
(MasakhaNER's DATE to `O`, say, for a suite whose NER follows WikiANN's three types).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import BenchError
from bench.task import COLUMNS, Kind
from tasks import formats

if TYPE_CHECKING:
    import datasets


class FileSource:
    def __init__(
        self,
        kind: Kind,
        files: Mapping[str, Mapping[str, Path | str]],
        labels: tuple[str, ...] = (),
        label_map: Mapping[str, str] | None = None,
    ) -> None:
        self.kind = kind
        self.files = {
            lang: {split: p if is_url(p) else Path(p) for split, p in splits.items()}
            for lang, splits in files.items()
        }
        self._labels = tuple(labels)
        self.label_map = dict(label_map or {})
        if kind is not Kind.MLM and not self._labels:
            raise BenchError("a labelled task's files need its label set (`labels`)")

    def labels(self) -> tuple[str, ...]:
        return self._labels

    def splits(self, language: str) -> tuple[str, ...]:
        return tuple(self.files.get(language, {}))

    def path(self, language: str, split: str) -> Path | str:
        return self.files[language][split]

    def load(self, language: str, split: str) -> datasets.Dataset:
        return as_dataset(self._read(self.path(language, split)), self.kind)

    def check(self, language: str, split: str) -> None:
        """Raise now if the split's file cannot be had (a URL not downloaded, offline)."""
        _local(self.path(language, split))

    @functools.cache  # noqa: B019 - a source lives as long as its suite; files are read once
    def _read(self, path: Path | str) -> list[dict]:
        parsed = formats.read(_local(path), self.kind, name=str(path))
        parsed.raise_problems(path)
        return mapped_labels(parsed.rows, self.kind, self._labels, self.label_map, str(path))

    def fingerprint(self, language: str, split: str) -> str:
        location = self.path(language, split)
        if is_url(location):  # a pinned URL: its content does not change
            digest = hashlib.sha256(str(location).encode()).hexdigest()[:24]
        else:
            stat = location.stat()
            digest = _file_digest(location, stat.st_size, stat.st_mtime_ns)
        mapping = json.dumps(self.label_map, sort_keys=True)
        return f"file-{digest}-{hashlib.sha256(mapping.encode()).hexdigest()[:8]}"


def as_dataset(rows: list[dict], kind: Kind) -> datasets.Dataset:
    """Parsed rows as a dataset with the columns of `kind`."""
    import datasets

    return datasets.Dataset.from_dict({c: [row[c] for row in rows] for c in COLUMNS[kind]})


def mapped_labels(
    rows: list[dict], kind: Kind, labels: tuple[str, ...], label_map: Mapping[str, str], where: str
) -> list[dict]:
    """`rows` with their labels mapped by `label_map`; a label outside `labels` is an error
    naming `where` (a file, a hub dataset) and the two ways out."""
    if kind is Kind.MLM:
        return rows
    field = "tags" if kind is Kind.TOKEN else "label"

    def mapped(value):
        if isinstance(value, list):
            return [label_map.get(v, v) for v in value]
        return label_map.get(value, value)

    rows = [{**row, field: mapped(row[field])} for row in rows]
    seen = {t for row in rows for t in (row[field] if field == "tags" else [row[field]])}
    unknown = sorted(seen - set(labels))
    if unknown:
        raise BenchError(
            f"{where} has labels {', '.join(unknown)} outside the task's "
            f"{', '.join(labels)}; add them to `labels` or map them (`label_map`)"
        )
    return rows


@functools.cache  # hashed once per version of the file: an edited file is hashed again
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:24]


def is_url(location: Path | str) -> bool:
    return isinstance(location, str) and location.startswith(("http://", "https://"))


@functools.cache
def _local(location: Path | str) -> Path:
    """A local file for `location`: itself, or a URL's download in the `datasets` cache."""
    if not is_url(location):
        return Path(location)
    from datasets.utils.file_utils import cached_path

    try:
        return Path(cached_path(str(location)))
    except (OSError, ValueError) as error:  # offline mode is a ConnectionError, an OSError
        raise BenchError(
            f"{location} cannot be downloaded ({type(error).__name__}: {str(error)[:120]}); "
            "run once where it can be reached (HF_DATASETS_OFFLINE unset), or use local files"
        ) from None
