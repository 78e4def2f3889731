"""Hub data sources and the paper suite, without network: the datasets are local copies laid
out as their hub repositories are (a README's `configs`, parquet files with `ClassLabel`
features), read through `$BENCH_HUB_MIRROR` by the same `load_dataset` call the hub takes."""

from __future__ import annotations

import types
from pathlib import Path

import datasets
import huggingface_hub
import pytest
from huggingface_hub import constants

from bench.cli import main
from bench.errors import BenchError
from bench.runner import backbone_path
from bench.suites import SUITES
from bench.task import Kind
from tasks import hub
from tasks.hub import HubPart, HubSource

ROOT = Path(__file__).resolve().parents[1]
WIKIANN_NAMES = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
NLI_NAMES = ["entailment", "neutral", "contradiction"]
NLI_FEATURES = {
    "premise": datasets.Value("string"),
    "hypothesis": datasets.Value("string"),
    "label": datasets.ClassLabel(names=NLI_NAMES),
}


def _repo(root: Path, repo: str, configs: dict[str, dict[str, tuple[str, datasets.Dataset]]]):
    """Write a hub dataset repository: config -> split -> (folder, rows), and its README."""
    folder = root / repo
    lines = ["---", "configs:"]
    for config, splits in configs.items():
        lines += [f"- config_name: {config}", "  data_files:"]
        for split, (sub, data) in splits.items():
            (folder / sub).mkdir(parents=True, exist_ok=True)
            data.to_parquet(folder / sub / f"{split}-00000-of-00001.parquet")
            lines += [f"  - split: {split}", f"    path: {sub}/{split}-*"]
    (folder / "README.md").write_text("\n".join([*lines, "---", f"# {repo}", ""]))


def _wikiann(rows: list[tuple[list[str], list[str]]]) -> datasets.Dataset:
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=WIKIANN_NAMES)),
            "langs": datasets.Sequence(datasets.Value("string")),
            "spans": datasets.Sequence(datasets.Value("string")),
        }
    )
    return datasets.Dataset.from_dict(
        {
            "tokens": [tokens for tokens, _ in rows],
            "ner_tags": [[WIKIANN_NAMES.index(t) for t in tags] for _, tags in rows],
            "langs": [["yo"] * len(tokens) for tokens, _ in rows],
            "spans": [[] for _ in rows],
        },
        features=features,
    )


def _nli(pairs: list[tuple[str, str, int]], extra: dict | None = None) -> datasets.Dataset:
    features = dict(NLI_FEATURES)
    columns = {
        "premise": [p for p, _, _ in pairs],
        "hypothesis": [h for _, h, _ in pairs],
        "label": [label for _, _, label in pairs],
    }
    for name, value in (extra or {}).items():  # MultiNLI's other columns
        features[name] = datasets.Value("string")
        columns[name] = [value] * len(pairs)
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


SENTENCES = [
    (["Wọ́n", "bí", "Ada", "Lovelace", "ní", "London"], ["O", "O", "B-PER", "I-PER", "O", "B-LOC"]),
    (["Ilé", "iṣẹ́", "Google"], ["O", "O", "B-ORG"]),
]
ARTICLE = "Ada Lovelace\n\nAda Lovelace jẹ́ onímọ̀ ìṣirò ọmọ ilẹ̀ Gẹ̀ẹ́sì.\nÌtàn\n" + (
    "Ó kọ ètò àkọ́kọ́ fún ẹ̀rọ ìṣirò Babbage.\n" * 3
)


@pytest.fixture()
def mirror(tmp_path, monkeypatch):
    root = tmp_path / "mirror"
    # every split and language its own sentences, as in real data (`bench.overlap` refuses a
    # suite that tests on what it trains on); the dev splits are SENTENCES as they are
    _repo(root, "unimelb-nlp/wikiann", {
        code: {
            split: (code, _wikiann(SENTENCES if split == "validation" else
                                   [([*t, f"{code}-{split}"], [*g, "O"]) for t, g in SENTENCES]))
            for split in ("train", "validation", "test")
        }
        for code in ("en", "yo")
    })  # fmt: skip
    pairs = [("A man sleeps.", "A person rests.", 0), ("A man sleeps.", "He runs.", 2)]

    def own(tag: str, count: int) -> list[tuple[str, str, int]]:
        return [(f"{p} {tag}{i}", f"{h} {tag}{i}", y) for i in range(count) for p, h, y in pairs]

    mnli = _nli([*pairs, ("Unclear.", "Maybe.", -1)], {"genre": "fiction", "pairID": "1e"})
    _repo(root, "nyu-mll/multi_nli", {
        "default": {
            split: ("data", mnli)
            for split in ("train", "validation_matched", "validation_mismatched")
        }
    })  # fmt: skip
    _repo(root, "nala-cub/americas_nli", {
        "quy": {split: ("quy", _nli(own(split, 3))) for split in ("validation", "test")}
    })  # fmt: skip
    _repo(root, "facebook/xnli", {
        "ar": {s: ("ar", _nli(own(f"ar-{s}", 1))) for s in ("train", "validation", "test")}
    })  # fmt: skip
    articles = datasets.Dataset.from_dict(
        {"id": ["1", "2"], "url": ["u1", "u2"], "title": ["Ada", "Ada"], "text": [ARTICLE] * 2}
    )
    _repo(root, "wikimedia/wikipedia", {"20231101.yo": {"train": ("20231101.yo", articles)}})
    monkeypatch.setenv(hub.MIRROR_VARIABLE, str(root))
    return root


def test_wikiann_tags_are_read_by_name_not_position(mirror):
    reordered = tuple(reversed(WIKIANN_NAMES))  # the suite's label order is not the dataset's
    source = HubSource(Kind.TOKEN, {"yor": HubPart(hub.WIKIANN, "yo")}, reordered)
    assert source.splits("yor") == ("train", "dev", "test") and source.splits("eng") == ()
    data = source.load("yor", "dev")
    assert data["tokens"] == [tokens for tokens, _ in SENTENCES]
    assert data["tags"] == [tags for _, tags in SENTENCES]


def test_nli_sources_map_splits_and_drop_pairs_without_a_gold_label(mirror):
    parts = {
        "eng": HubPart(hub.MULTI_NLI, None),
        "quy": HubPart(hub.AMERICAS_NLI, "quy"),
        "ara": HubPart(hub.XNLI, "ar", ("dev", "test")),
    }
    source = HubSource(Kind.SENTENCE, parts, tuple(NLI_NAMES))
    assert source.splits("quy") == ("dev", "test") and source.splits("ara") == ("dev", "test")
    train = source.load("eng", "train")
    assert train["label"] == ["entailment", "contradiction"]  # the -1 pair is gone
    assert train.column_names == ["premise", "hypothesis", "label"]
    assert len(source.load("quy", "dev")) == 6 and len(source.load("ara", "test")) == 2


def test_wikipedia_gives_its_paragraphs_as_lines_up_to_a_limit(mirror):
    part = {"yor": HubPart(hub.WIKIPEDIA, "20231101.yo")}
    text = HubSource(Kind.MLM, part).load("yor", "train")["text"]
    assert text[:2] == ["Ada Lovelace jẹ́ onímọ̀ ìṣirò ọmọ ilẹ̀ Gẹ̀ẹ́sì.", ARTICLE.split("\n")[4]]
    assert len(text) == 8  # two articles of four paragraphs; titles and headings are not text
    assert len(HubSource(Kind.MLM, part, text_lines=5).load("yor", "train")) == 5


def test_fingerprints_follow_config_split_labels_and_the_copy(mirror):
    parts = {"yor": HubPart(hub.WIKIANN, "yo"), "eng": HubPart(hub.WIKIANN, "en")}
    source = HubSource(Kind.TOKEN, parts, tuple(WIKIANN_NAMES))
    mapped = HubSource(Kind.TOKEN, parts, tuple(WIKIANN_NAMES), {"B-ORG": "O", "I-ORG": "O"})
    keys = {
        source.fingerprint("yor", "test"),
        source.fingerprint("eng", "test"),
        source.fingerprint("yor", "dev"),
        mapped.fingerprint("yor", "test"),
    }
    assert len(keys) == 4
    before = source.fingerprint("yor", "test")
    hub._folder_identity.cache_clear()
    (mirror / "unimelb-nlp/wikiann/yo/extra.parquet").write_bytes(b"changed")
    assert source.fingerprint("yor", "test") != before


def test_a_label_outside_the_set_names_the_dataset(mirror):
    source = HubSource(Kind.TOKEN, {"yor": HubPart(hub.WIKIANN, "yo")}, ("O", "B-PER", "I-PER"))
    with pytest.raises(BenchError, match=r"unimelb-nlp/wikiann \(yo, test\) has labels B-LOC"):
        source.load("yor", "test")


def test_without_the_hub_or_a_copy_the_dataset_and_the_way_out_are_named(monkeypatch):
    monkeypatch.delenv(hub.MIRROR_VARIABLE, raising=False)
    source = HubSource(Kind.TOKEN, {"yor": HubPart(hub.WIKIANN, "yo")}, tuple(WIKIANN_NAMES))
    with pytest.raises(BenchError, match=r"unimelb-nlp/wikiann \(yo, test\) cannot be read.*"):
        source.load("yor", "test")


def _hub_suite(tmp_path: Path, tasks: str) -> Path:
    path = tmp_path / "hub.toml"
    (tmp_path / "en.txt").write_text("A local line of English text.\nAnd one more.\n")
    path.write_text(f'''
backbone = "{ROOT / "backbones" / "demo"}"
[train]
max_steps = 4
eval_every = 2
{tasks}
[settings.mixed]
train = ["ner/en", "nli/quy@dev[:4]"]
select = ["ner/en", "nli/quy@dev[4:]"]
''')
    return path


HUB_TASKS = """
[tasks.ner]
labels = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
hub.en = { dataset = "unimelb-nlp/wikiann", config = "en" }
hub.yo = { dataset = "unimelb-nlp/wikiann", config = "yo", splits = ["test"] }
[tasks.nli]
hub.quy = { dataset = "nala-cub/americas_nli", config = "quy" }
hub.ar = { dataset = "facebook/xnli", config = "ar", splits = ["test"] }
[tasks.mlm]
hub.yo = { dataset = "wikimedia/wikipedia", config = "20231101.yo" }
files.en = { train = "en.txt" }
"""


def test_a_suite_file_reads_hub_datasets_and_runs(mirror, tmp_path, capsys):
    suite = _hub_suite(tmp_path, HUB_TASKS)
    assert main(["plan", "--suite", str(suite), "--setting", "mixed"]) == 0
    plan = capsys.readouterr().out
    assert "ner: yor | nli: ara" in plan and "mlm          eng yor" in plan  # files and hub
    out = tmp_path / "runs"
    args = ["run", "--method", "dummy", "--suite", str(suite), "--output", str(out)]
    assert main([*args, "--setting", "mixed", "--no-progress"]) == 0
    assert "nli   ara" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('"facebook/xnli"', '"facebook/xnly"'), "needs `dataset`, one of: unimelb-nlp/wikiann"),
        (('splits = ["test"] }\n[tasks.nli]', 'splits = ["tests"] }\n[tasks.nli]'), "tests"),
        (('config = "quy" }', 'config = "quy", revision = "x" }'), "unknown keys revision"),
        (("[tasks.mlm]", '[tasks.mlm]\nfiles.yo = { train = "hub.toml" }'), "files and hub"),
        (("[tasks.mlm]", "[tasks.mlm]\nhubs = 1"), "unknown keys hubs; valid: labels"),
    ],
)
def test_bad_hub_entries_fail_with_one_line(mirror, tmp_path, capsys, edit, message):
    suite = _hub_suite(tmp_path, HUB_TASKS.replace(*edit))
    assert main(["plan", "--suite", str(suite), "--setting", "mixed"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_the_paper_suite_plans_offline(capsys):
    """Its Plan prints anywhere; the checks that follow say that the backbone is not here."""
    assert main(["plan", "--suite", "paper", "--setting", "mixed"]) == 2
    plan, err = capsys.readouterr()
    assert "google-bert/bert-base-multilingual-cased is not in the local Hugging Face" in err
    assert "train        ner: eng ara | pos: eng tur zho | nli: eng  [train split]" in plan
    assert "nli: ara tur zho grn aym nah quy  [test split]" in plan  # AmericasNLI and XNLI
    assert "pos: ara bre fao grn hsb isl kaz mlt san tam tgl uig yor yue |" in plan  # 13 UD
    suite = SUITES.get("paper")()
    assert suite.train.max_steps == 100_000 and suite.train.max_length == 256
    pos = suite.task("pos").source
    assert pos.path("yue", "test").endswith("/UD_Cantonese-HK/r2.7/yue_hk-ud-test.conllu")


def test_the_paper_suite_offline_stops_at_once_naming_its_backbone(tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["run", "--method", "hyperx", "--suite", "paper", "--output", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "google-bert/bert-base-multilingual-cased is not in the local Hugging Face" in err
    assert not out.exists()


def test_a_hub_backbone_is_read_from_the_hugging_face_cache(tmp_path, monkeypatch):
    commit = "0" * 40
    repo = tmp_path / "hub" / "models--someone--tiny-bert"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in (ROOT / "backbones" / "demo").iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert backbone_path("someone/tiny-bert") == snapshot
    assert backbone_path(f"someone/tiny-bert@{commit}") == snapshot
    with pytest.raises(BenchError, match="someone/tiny-bert@v2 is not in the local"):
        backbone_path("someone/tiny-bert@v2")


def test_a_branch_is_keyed_by_the_commit_it_resolves_to(monkeypatch):
    monkeypatch.delenv(hub.MIRROR_VARIABLE, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # HF_DATASETS_OFFLINE
    asked = []

    def dataset_info(self, repo, revision):
        asked.append((repo, revision))
        return types.SimpleNamespace(sha=f"{len(asked)}" * 40)

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", dataset_info)
    hub._commit.cache_clear()
    source = HubSource(Kind.TOKEN, {"yor": HubPart(hub.WIKIANN, "yo")}, tuple(WIKIANN_NAMES))
    first = source.fingerprint("yor", "test")
    assert source.fingerprint("yor", "dev") != first and len(asked) == 1  # once per process
    hub._commit.cache_clear()
    assert source.fingerprint("yor", "test") != first  # `main` moved: the caches follow
    text = HubSource(Kind.MLM, {"yor": HubPart(hub.WIKIPEDIA, "20231101.yo")})
    text.fingerprint("yor", "train")
    assert asked == [("unimelb-nlp/wikiann", "main")] * 2  # a recorded commit is not asked for
    hub._commit.cache_clear()
