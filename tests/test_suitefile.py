"""Suites as TOML files over local data files: loading, spelled-out settings, and bad input."""

import functools
import http.server
import re
import threading
from pathlib import Path

import datasets
import pytest
from shared_data import SHARED, needs_shared
from test_formats import CONLLU, conllu

from bench import runner, suites, typology
from bench.cli import main
from bench.errors import BenchError
from bench.request import resolve
from bench.settings import SETTINGS
from bench.task import Kind
from tasks import formats
from tasks.files import FileSource

ROOT = Path(__file__).resolve().parents[1]
NER = "Ada B-PER\nLovelace I-PER\nin O\nLondon B-LOC\n\n" * 6


def ner(tag: str, count: int = 6) -> str:
    """`count` two-column NER sentences, each its own (`tag` and its number in a word)."""
    return "".join(
        f"Ada B-PER\nLovelace I-PER\nin O\nLondon-{tag}{i} B-LOC\n\n" for i in range(count)
    )


def two_language_files(data: Path, en: str = "", en_count: int = 3, de_count: int = 6) -> None:
    """English POS and German NER, train, dev and test, each split its own sentences (`en`
    tags the English ones), and German MLM text."""
    data.mkdir()
    for split in ("train", "dev", "test"):
        (data / f"en-{split}.conllu").write_text(conllu(f"{en}{split}", en_count))
        (data / f"de-{split}.txt").write_text(ner(split, de_count))
    (data / "de.txt").write_text("Ein Satz.\nNoch einer.\n")


def two_language_suite(
    data, german_pos: dict[str, str], backbone=ROOT / "backbones" / "demo", text: bool = True
) -> str:
    """The TOML of a suite over `two_language_files` in `data` (a folder, or a placeholder for
    it), German POS read from `german_pos` (split -> file in it); `text`: German MLM text."""
    lines = [f'backbone = "{backbone}"', "[tasks.pos.files.en]"]
    lines += [f'{split} = "{data}/en-{split}.conllu"' for split in ("train", "dev", "test")]
    lines += ["[tasks.pos.files.de]"]
    lines += [f'{split} = "{data}/{name}"' for split, name in german_pos.items()]
    lines += ["[tasks.ner]", 'labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]']
    lines += ["[tasks.ner.files.de]"]
    lines += [f'{split} = "{data}/de-{split}.txt"' for split in ("train", "dev", "test")]
    if text:
        lines += ["[tasks.mlm.files]", f'de = {{ train = "{data}/de.txt" }}']
    return "\n".join(lines) + "\n"


@pytest.fixture()
def suite_file(tmp_path, monkeypatch):
    """A two-language suite over files written here; `${DATA}` names their folder."""
    two_language_files(tmp_path / "data")
    monkeypatch.setenv("DATA", str(tmp_path / "data"))
    path = tmp_path / "mine.toml"
    path.write_text(
        two_language_suite("${DATA}", {"test": "en-test.conllu"})
        + """
[train]
max_steps = 5
[settings.mixed]
train = ["pos/en", "ner/de@train[:4]"]
[settings.single-task.models]
pos = ["pos/eng"]
ner = ["ner/deu"]
"""
    )
    return path


def test_suite_file_loads_with_iso_639_3_languages(suite_file):
    suite = suites.get(str(suite_file))
    assert suite.name == "mine" and suite.languages == ("eng", "deu")
    assert suite.labelled_tasks == ("pos", "ner") and suite.text_languages == ("deu",)
    assert suite.train.max_steps == 5
    rows = suite.task("ner").load("deu", "train")
    assert len(rows) == 6 and rows[0]["tags"] == ["B-PER", "I-PER", "O", "B-LOC"]


def test_spelled_out_mixed_plan(suite_file):
    suite = suites.get(str(suite_file))
    (model,) = SETTINGS.get("mixed").build(suite, 0, suite.train).models
    assert [(str(t.pair), t.split, t.indices) for t in model.train] == [
        ("pos/eng", "train", None),
        ("ner/deu", "train", (0, 1, 2, 3)),
    ]
    assert {(str(e.pair), e.split) for e in model.selection} == {
        ("pos/eng", "dev"),
        ("ner/deu", "dev"),
    }
    roles = {str(e.pair): e.role for e in model.eval}
    assert roles == {"pos/eng": "source", "pos/deu": "target", "ner/deu": "source"}
    assert [str(t.pair) for t in model.mlm] == ["mlm/deu"]
    single = SETTINGS.get("single-task").build(suite, 0, suite.train)
    assert [m.name for m in single.models] == ["pos", "ner"]


def test_a_run_on_a_suite_file_trains_and_evaluates(suite_file, tmp_path):
    out = tmp_path / "runs"
    args = ["run", "--method", "dummy", "--suite", str(suite_file), "--output", str(out)]
    assert main([*args, "--no-progress", "--max-steps", "4", "--eval-every", "2"]) == 0


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("[train]", "[trainer]\n[train]"), "unknown keys trainer"),
        (("/en-dev.conllu", "/missing.conllu"), "missing.conllu does not exist"),
        (('"pos/en", ', '"pos/en@test", '), "trains on a test split"),
        (('"pos/en", ', '"pos/xx", '), "'xx' is not an ISO 639-1"),
        (('"pos/en", ', '"pos/en@dev[1:2:3]", '), "is invalid; write task/language"),
        (("[settings.mixed]", "[settings.mixt]"), "mixt"),
        (('labels = ["O", ', "labels = ["), "outside the task's"),
    ],
)
def test_bad_suite_files_fail_with_one_line(suite_file, edit, message, capsys):
    suite_file.write_text(suite_file.read_text().replace(*edit, 1))
    assert main(["plan", "--suite", str(suite_file)]) == 2 or pytest.fail("accepted")
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_plan_checks_the_backbone_and_counts_what_each_pair_reads(suite_file, capsys):
    assert main(["plan", "--suite", str(suite_file)]) == 0
    out = capsys.readouterr().out
    assert "  train      ner/deu@train[:4]" in out and "       4 sentences" in out
    rows = suites.get(str(suite_file)).task("ner").load("deu", "dev")
    assert re.search(rf"\n  selection  ner/deu@dev +{len(rows)} sentences\n", out)
    missing = suite_file.parent / "no-model"
    text = suite_file.read_text().replace(str(ROOT / "backbones" / "demo"), str(missing))
    suite_file.write_text(text)
    assert main(["plan", "--suite", str(suite_file)]) == 2
    err = capsys.readouterr().err
    assert f"backbone folder {missing} has no config.json" in err and err.count("\n") == 1


def test_relative_paths_in_variables_are_read_from_the_current_directory(
    suite_file, monkeypatch, capsys
):
    """`export DATA=data` in a shell means ./data, not a folder beside the suite file; a path
    written in the file itself is read from the file's folder."""
    elsewhere = suite_file.parent / "elsewhere"
    elsewhere.mkdir()
    moved = elsewhere / "mine.toml"
    moved.write_text(suite_file.read_text())
    monkeypatch.chdir(suite_file.parent)
    for value in ("data", "./data", "../" + suite_file.parent.name + "/data"):
        monkeypatch.setenv("DATA", value)
        suite = suites.get(str(moved))
        assert len(suite.task("ner").load("deu", "train")) == 6, value
    monkeypatch.setenv("DATA", "nowhere")
    with pytest.raises(BenchError, match=f"{elsewhere}/nowhere/en-train.conllu does not exist"):
        suites.get(str(moved))  # neither here nor there: read from the file's folder, as named


def test_list_shows_suite_files_and_the_values_a_suite_sets(suite_file, capsys):
    text = suite_file.read_text().replace("[train]", "[method.hyperx]\nbottleneck = 64\n[train]")
    suite_file.write_text(text)
    assert main(["list"]) == 0
    assert "  suites/shared.toml  real UD, MasakhaNER 2.0" in capsys.readouterr().out
    assert main(["list", "--options", "--suite", str(suite_file), "--method", "hyperx"]) == 0
    out = capsys.readouterr().out
    assert "train options as suite mine sets them:" in out
    assert re.search(r"\n  train\.max_steps=5 +steps per model.*\[default 600\]\n", out)
    assert re.search(r"\n  method\.bottleneck=64 +adapter bottleneck size \[default 256\]\n", out)
    assert re.search(r"\n  method\.lr=0\.0001 +peak learning rate[^[]*\n", out)  # the default
    assert "method options of lora" not in out
    assert main(["list", "--suite", str(suite_file)]) == 2
    assert "add --options" in capsys.readouterr().err


def test_unset_variable_is_named(suite_file, monkeypatch, capsys):
    monkeypatch.delenv("DATA")
    with pytest.raises(BenchError, match=r"\$\{DATA\}"):
        suites.get(str(suite_file))


@needs_shared
def test_shared_suite_plans_the_papers_mixed_layout(monkeypatch, capsys):
    monkeypatch.setenv("BENCH_DATA_DIR", str(SHARED))
    monkeypatch.setenv("BENCH_E5_DIR", str(ROOT / "backbones" / "demo"))  # plan reads config.json
    assert main(["plan", "--suite", str(ROOT / "suites" / "shared.toml")]) == 0
    out = capsys.readouterr().out
    assert "pos: eng (1800 of dev) tur | ner: hau swa yor | nli: quy (643 of dev)" in out
    assert "eval target  pos: yor mlt tgl | ner: ibo pcm | nli: aym grn nah shp" in out
    assert re.search(r"\n  train +pos/eng@dev\[:1800\] +1,800 sentences\n", out)
    assert re.search(r"\n  selection +nli/quy@dev\[643:\] +100 pairs\n", out)
    assert re.search(r"\n  eval +ner/yor@test \(source\) +1,964 sentences\n", out)  # whole
    # typology has a vector for every language, the macrolanguages through the suite's `uriel`
    request = runner.Request(
        method="hyperx", setting="zero-text", suite=str(ROOT / "suites" / "shared.toml"),
        output=ROOT / "unused", method_options={"language_source": "typology"},
    )  # fmt: skip
    suite, method, config, _, plan = resolve(request)
    assert len(method.typology_languages(plan.models[0], config)) == 14
    assert typology.vector(suite, "nah") == typology.uriel("nhn")


def test_training_on_part_of_a_split_and_selecting_on_the_rest_keeps_them_apart(
    suite_file, tmp_path
):
    # a held-out slice of dev, never of train: model selection reads dev data only (leakage)
    select = 'select = ["pos/en", "ner/de@dev[4:]"]\n'
    text = suite_file.read_text().replace('"ner/de@train[:4]"', '"ner/de@dev[:4]"', 1)
    head, _, tail = text.partition("[settings.single-task.models]")
    suite_file.write_text(f"{head}{select}[settings.single-task.models]{tail}")
    request = runner.Request(method="dummy", suite=str(suite_file), output=tmp_path, progress=False)
    prepared = runner.prepare(request)
    (model,) = prepared.plan.models
    trained = next(t for t in model.train if t.pair.task == "ner")
    selected = next(e for e in model.selection if e.pair.task == "ner")
    assert (trained.split, selected.split) == ("dev", "dev")
    assert len(prepared.data[runner.data_key(trained)]) == 4
    assert len(prepared.data[runner.data_key(selected)]) == 2


@pytest.fixture()
def served(tmp_path):
    """An HTTP server on localhost over `tmp_path`: a stand-in for a release tag's raw files."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_files_at_urls_are_downloaded_once_and_refused_offline(
    suite_file, served, tmp_path, monkeypatch
):
    release = tmp_path / "UD_English-Test" / "r2.15"
    release.mkdir(parents=True)
    (release / "en_test-ud-test.conllu").write_text(CONLLU)
    url = f"{served}/UD_English-Test/r2.15/en_test-ud-test.conllu"
    text = suite_file.read_text().replace('test = "${DATA}/en-test.conllu"', f'test = "{url}"', 1)
    suite_file.write_text(text)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    suite = suites.get(str(suite_file))
    assert suite.task("pos").source.path("eng", "test") == url
    assert len(suite.task("pos").load("eng", "test")) == 2
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    other = f"{served}/UD_English-Test/r2.15/other.conllu"
    source = FileSource(Kind.TOKEN, {"eng": {"test": other}}, formats.UPOS)
    with pytest.raises(BenchError, match=r"other\.conllu cannot be downloaded"):
        source.load("eng", "test")


def test_compare_on_a_suite_file_names_the_suite_not_the_path(suite_file, tmp_path):
    report = tmp_path / "compare.md"
    args = ["compare", "--methods", "dummy", "--seeds", "1", "--max-steps", "2"]
    args += ["--suite", str(suite_file), "--output", str(tmp_path / "runs")]
    args += ["--report", str(report)]
    assert main(args) == 0
    assert report.read_text().startswith("# Methods compared on the mine suite\n")
