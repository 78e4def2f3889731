"""Readers of real data formats: small files written here, and every file of ../shared/data."""

from pathlib import Path

import pytest
from shared_data import SHARED, needs_shared

from bench.cli import main
from bench.languages import iso639_3
from bench.task import Kind
from tasks import formats

CONLLU = """# sent_id = 1
# text = Don't go.
1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_
1\tDo\tdo\tAUX\t_\t_\t3\taux\t_\t_
2\tn't\tnot\tPART\t_\t_\t3\tadvmod\t_\t_
3\tgo\tgo\tVERB\t_\t_\t0\troot\t_\t_
3.1\tgone\tgo\tVERB\t_\t_\t_\t_\t3:conj\t_
4\t.\t.\tPUNCT\t_\t_\t3\tpunct\t_\t_

# sent_id = 2
1\tYes\tyes\tINTJ\t_\t_\t0\troot\t_\t_
"""


def conllu(tag: str, copies: int = 1) -> str:
    """CONLLU `copies` times over, each sentence its own (`tag` and its number in its words):
    a split that shares no sentence with another split (`bench.overlap`)."""
    return "\n".join(
        CONLLU.replace("\tgo\t", f"\tgo-{tag}{i}\t").replace("\tYes\t", f"\tYes-{tag}{i}\t")
        for i in range(copies)
    )


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_conllu_keeps_words_only_with_their_upos(tmp_path):
    parsed = formats.read_conllu(write(tmp_path, "x.conllu", CONLLU))
    assert parsed.problems == []
    assert parsed.rows == [
        {"tokens": ["Do", "n't", "go", "."], "tags": ["AUX", "PART", "VERB", "PUNCT"]},
        {"tokens": ["Yes"], "tags": ["INTJ"]},
    ]


def test_conllu_problems_carry_their_line(tmp_path):
    text = CONLLU.replace("3\tgo\tgo\tVERB", "3\tgo\tgo\tVERBAL").replace("1\tYes\tyes", "1\tYes")
    parsed = formats.read_conllu(write(tmp_path, "x.conllu", text))
    assert [str(p) for p in parsed.problems] == [
        "line 6: UPOS 'VERBAL' is not one of the 17 universal tags",
        "line 11: expected 10 tab-separated fields, found 9",
    ]
    assert parsed.rows == []


def test_conll_ner_reads_bio_and_reports_an_orphan_inside_tag(tmp_path):
    text = "Ada B-PER\nLovelace I-PER\nin O\nLondon I-LOC\n\nhi O\n"
    parsed = formats.read_conll_ner(write(tmp_path, "x.txt", text))
    assert parsed.rows[0]["tags"] == ["B-PER", "I-PER", "O", "I-LOC"]  # kept as published
    assert [str(w) for w in parsed.warnings] == ["line 4: I-LOC after O begins a new entity"]
    assert parsed.problems == [] and len(parsed.rows) == 2
    bad = formats.read_conll_ner(write(tmp_path, "y.txt", "Ada PER\nx\n"))
    assert [p.line for p in bad.problems] == [1, 2] and bad.rows == []


def test_nli_tsv_accepts_names_and_hub_integers(tmp_path):
    text = "id\tpremise\thypothesis\tlabel\n1\ta\tb\tneutral\n2\tc\td\t2\n3\te\tf\tmaybe\n"
    parsed = formats.read_nli_tsv(write(tmp_path, "x.tsv", text))
    assert [r["label"] for r in parsed.rows] == ["neutral", "contradiction"]
    assert [str(p) for p in parsed.problems] == [
        "line 4: label 'maybe' is not one of entailment, neutral, contradiction"
    ]
    missing = formats.read_nli_tsv(write(tmp_path, "y.tsv", "premise\tlabel\na\t0\n"))
    assert str(missing.problems[0]) == "line 1: header lacks hypothesis"


def test_data_check_prints_counts_and_fails_on_a_malformed_file(tmp_path, capsys):
    good = write(tmp_path, "x.conllu", CONLLU)
    assert main(["data", "check", str(good), "--task", "pos"]) == 0
    out = capsys.readouterr().out
    assert "sentences 2, tokens 5" in out and "AUX 1" in out
    bad = write(tmp_path, "y.conllu", CONLLU.replace("\tPUNCT\t", "\tPUNC\t"))
    assert main(["data", "check", str(bad), "--task", "pos"]) == 2
    captured = capsys.readouterr()
    assert "line 8: UPOS 'PUNC'" in captured.out
    assert captured.err.count("\n") == 1 and "malformed" in captured.err
    assert main(["data", "check", str(tmp_path / "none.txt"), "--task", "ner"]) == 2


def test_language_codes_become_iso_639_3():
    assert [iso639_3(c) for c in ("en", "eng", "en-US", "tl", "gn", "yo", "qaa")] == [
        "eng", "eng", "eng", "tgl", "grn", "yor", "qaa",
    ]  # fmt: skip


def _blocks(path: Path) -> list[list[str]]:
    """Blank-line separated blocks of a file, counted without the readers' code."""
    text = path.read_text(encoding="utf-8")
    return [b.splitlines() for b in text.replace("\r\n", "\n").split("\n\n") if b.strip()]


@needs_shared
@pytest.mark.parametrize("path", sorted(SHARED.glob("ud/*/*.conllu")), ids=lambda p: p.name)
def test_every_shared_treebank_parses(path):
    parsed = formats.read(path, Kind.TOKEN)  # .conllu: CoNLL-U
    assert parsed.problems == []
    blocks = _blocks(path)
    assert len(parsed.rows) == len(blocks)
    words = [line.split("\t") for b in blocks for line in b if line.split("\t")[0].isdigit()]
    assert sum(len(r["tokens"]) for r in parsed.rows) == len(words)
    assert {t for r in parsed.rows for t in r["tags"]} == {w[3] for w in words}


@needs_shared
@pytest.mark.parametrize(
    "path", sorted(SHARED.glob("masakhaner2/*/*.txt")), ids=lambda p: f"{p.parent.name}-{p.name}"
)
def test_every_shared_masakhaner_file_parses(path):
    parsed = formats.read(path, Kind.TOKEN)  # .txt: two-column CoNLL
    assert parsed.problems == []
    blocks = _blocks(path)
    assert len(parsed.rows) == len(blocks)
    tags = {line.split()[-1] for b in blocks for line in b}
    assert {t for r in parsed.rows for t in r["tags"]} == tags
    assert {t[2:] for t in tags if t != "O"} == {"PER", "ORG", "LOC", "DATE"}


@needs_shared
@pytest.mark.parametrize(
    "path", sorted(SHARED.glob("americasnli/*/*.tsv")), ids=lambda p: f"{p.parent.name}-{p.name}"
)
def test_every_shared_americasnli_file_parses(path):
    parsed = formats.read(path, Kind.SENTENCE)
    assert parsed.problems == []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines()[1:] if line]
    assert len(parsed.rows) == len(lines)
    assert {r["label"] for r in parsed.rows} == {line.split("\t")[-1] for line in lines}


@needs_shared
def test_every_shared_udhr_text_parses():
    paths = sorted(SHARED.glob("udhr/*.txt"))
    assert len(paths) > 500
    for path in paths:
        parsed = formats.read(path, Kind.MLM)
        assert parsed.problems == [], path
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        assert len(parsed.rows) == len(lines), path
