"""Readers for the data files of real benchmarks, each returning rows in the harness's columns
and, with their line numbers, the problems that make the file unreadable and the oddities of the
data that are kept as published (a BIO tag that continues no entity, an empty premise).

- CoNLL-U (Universal Dependencies): read with the `conllu` library; comments, multiword-token
  ranges (`3-4`) and empty nodes (`5.1`) are skipped; the label is the UPOS column. Word IDs
  count 1, 2, ... in each sentence, as UD's validator requires.
- two-column CoNLL NER (MasakhaNER): `token TAG` per line, a blank line between sentences; tags
  are checked as BIO (an `I-` tag that continues no entity is kept, as seqeval reads it: it
  begins one, and reported).
- NLI TSV (AmericasNLI, XNLI): a header with `premise`, `hypothesis` and `label` (a name or the
  hub's integer), one example per row.
- text (MLM): one sentence or paragraph per line; blank lines are skipped.

A file without a single example is malformed too: it would only fail later, without its name.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import conllu

from bench.errors import BenchError
from bench.task import Kind

# Universal Dependencies' 17 universal part-of-speech tags
UPOS = (
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
    "PUNCT", "SCONJ", "SYM", "VERB", "X",
)  # fmt: skip
NLI_LABELS = ("entailment", "neutral", "contradiction")  # hub order: 0, 1, 2
# a CoNLL-U ID: a word (1, 2, ...), a multiword token's range (3-4) or an empty node (5.1)
_CONLLU_ID = re.compile(r"(?P<word>[1-9]\d*)|(?P<start>[1-9]\d*)-(?P<end>[1-9]\d*)|\d+\.[1-9]\d*")


@dataclasses.dataclass(frozen=True)
class Problem:
    line: int  # 1-based line of the file
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclasses.dataclass
class Parsed:
    """What a file holds in the harness's columns (see `bench.task.COLUMNS`), and what is wrong."""

    kind: Kind
    rows: list[dict]
    problems: list[Problem]  # the file is malformed: it cannot be used
    warnings: list[Problem] = dataclasses.field(default_factory=list)  # kept as published

    def raise_problems(self, path: Path | str) -> None:
        if self.problems:
            more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            raise BenchError(f"{path}: {self.problems[0]}{more}; `bench data check` lists them")


def format_of(name: str, task_kind: Kind) -> str:
    """The format a file of `task_kind` named `name` is read in: token tasks by its suffix
    (`.conllu`: CoNLL-U, else two-column CoNLL), sentence tasks TSV, MLM text."""
    if task_kind is Kind.TOKEN:
        return "conllu" if name.endswith(".conllu") else "conll"
    return "tsv" if task_kind is Kind.SENTENCE else "text"


def read(path: Path, task_kind: Kind, *, name: str | None = None) -> Parsed:
    """Parse `path` in the format of `task_kind` and its name (`name`: the file's own name when
    `path` is a download of it)."""
    readers: dict[str, Callable[[Path], Parsed]] = {
        "conllu": read_conllu,
        "conll": read_conll_ner,
        "tsv": read_nli_tsv,
        "text": read_text,
    }
    if not Path(path).is_file():
        raise BenchError(f"data file {path} does not exist")
    return readers[format_of(name or Path(path).name, task_kind)](Path(path))


def _blocks(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(first line number, lines) of each blank-line separated block."""
    block: list[str] = []
    start = 1
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.rstrip("\n").rstrip("\r")
            if line.strip():
                if not block:
                    start = number
                block.append(line)
            elif block:
                yield start, block
                block = []
    if block:
        yield start, block


def read_conllu(path: Path) -> Parsed:
    rows, problems = [], []
    for start, lines in _blocks(path):
        bad = [
            Problem(start + i, message)
            for i, line in enumerate(lines)
            if (message := _conllu_line_problem(line))
        ]
        if not bad and (disorder := _conllu_order_problem(start, lines)):
            bad = [disorder]
        if bad:
            problems += bad
            continue
        try:
            (sentence,) = conllu.parse("\n".join(lines) + "\n\n")
        except (conllu.exceptions.ParseException, ValueError) as error:
            problems.append(Problem(start, f"unreadable sentence: {error}"))
            continue
        words = [t for t in sentence if isinstance(t["id"], int)]  # no ranges, no empty nodes
        if not words:
            problems.append(Problem(start, "sentence without words"))
            continue
        rows.append({"tokens": [t["form"] for t in words], "tags": [t["upos"] for t in words]})
    return Parsed(Kind.TOKEN, rows, _unless_empty(rows, problems, "no sentences"))


def _conllu_line_problem(line: str) -> str | None:
    if line.startswith("#"):
        return None
    fields = line.split("\t")
    if len(fields) != 10:
        return f"expected 10 tab-separated fields, found {len(fields)}"
    word_id, upos = fields[0], fields[3]
    match = _CONLLU_ID.fullmatch(word_id)
    if match is None or (match["start"] and int(match["start"]) >= int(match["end"])):
        return f"ID {word_id!r} is not a word number, range (3-4) or empty node (5.1)"
    if match["word"] and upos not in UPOS:  # ranges and empty nodes are not words
        return f"UPOS {upos!r} is not one of the 17 universal tags"
    return None


def _conllu_order_problem(start: int, lines: list[str]) -> Problem | None:
    """The first word whose ID breaks the sentence's count 1, 2, ... (IDs are well-formed)."""
    expected = 1
    for offset, line in enumerate(lines):
        word_id = line.split("\t")[0]
        if line.startswith("#") or not word_id.isdigit():
            continue
        if int(word_id) != expected:
            return Problem(
                start + offset, f"ID {word_id!r} is out of sequence: expected {expected}"
            )
        expected += 1
    return None


def _unless_empty(rows: list[dict], problems: list[Problem], what: str) -> list[Problem]:
    """`problems`, or, for a file that holds nothing at all, the one that says so."""
    return problems if rows or problems else [Problem(1, what)]


def read_conll_ner(path: Path) -> Parsed:
    rows, problems, warnings = [], [], []
    for start, lines in _blocks(path):
        tokens, tags, previous, ok = [], [], "O", True
        for offset, line in enumerate(lines):
            number = start + offset
            parts = line.split()
            if len(parts) != 2:
                problems.append(Problem(number, f"expected 'token TAG', found {len(parts)} fields"))
                ok = False
                continue
            token, tag = parts
            if _bio_malformed(tag):
                problems.append(Problem(number, f"tag {tag!r} is not BIO (O, B-TYPE or I-TYPE)"))
                ok = False
            elif tag.startswith("I-") and previous[2:] != tag[2:]:
                warnings.append(Problem(number, f"{tag} after {previous} begins a new entity"))
            tokens.append(token)
            tags.append(tag)
            previous = tag
        if ok:
            rows.append({"tokens": tokens, "tags": tags})
    return Parsed(Kind.TOKEN, rows, _unless_empty(rows, problems, "no sentences"), warnings)


def _bio_malformed(tag: str) -> bool:
    prefix, _, entity = tag.partition("-")
    return tag != "O" and (prefix not in ("B", "I") or not entity)


def read_nli_tsv(path: Path) -> Parsed:
    rows, problems, warnings = [], [], []
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        if reader.fieldnames is None:
            return Parsed(Kind.SENTENCE, [], [Problem(1, "no examples")])
        missing = {"premise", "hypothesis", "label"} - set(reader.fieldnames)
        if missing:
            problem = Problem(1, f"header lacks {', '.join(sorted(missing))}")
            return Parsed(Kind.SENTENCE, [], [problem])
        for row in reader:
            number = reader.line_num
            label = nli_label(row["label"])
            if label is None:
                valid = ", ".join(NLI_LABELS)
                problems.append(Problem(number, f"label {row['label']!r} is not one of {valid}"))
                continue
            premise, hypothesis = (row["premise"] or "").strip(), (row["hypothesis"] or "").strip()
            if not premise or not hypothesis:
                warnings.append(Problem(number, "empty premise or hypothesis"))
            rows.append({"premise": premise, "hypothesis": hypothesis, "label": label})
    return Parsed(Kind.SENTENCE, rows, _unless_empty(rows, problems, "no examples"), warnings)


def nli_label(value) -> str | None:
    """A label name, from a name or the hub's integer (entailment 0, neutral 1, contradiction 2)."""
    text = str(value).strip().lower()
    if text in NLI_LABELS:
        return text
    if text.isdigit() and int(text) < len(NLI_LABELS):
        return NLI_LABELS[int(text)]
    return None


def read_text(path: Path) -> Parsed:
    with open(path, encoding="utf-8") as handle:
        rows = [{"text": line.strip()} for line in handle if line.strip()]
    return Parsed(Kind.MLM, rows, _unless_empty(rows, [], "no text"))
