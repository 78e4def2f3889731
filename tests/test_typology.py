"""Typological language vectors (URIEL through lang2vec, the demo world's own) and Hyper-X's
language input from them: `method.language_source`, the `zero-text` setting, `bench languages`."""

import math

import pytest
import torch
from test_run import TINY
from test_suitefile import two_language_files, two_language_suite

from bench import params, runner, suites, typology
from bench.cli import main
from bench.errors import BenchError
from bench.request import resolve
from bench.settings import Pair
from methods._hyperx import HyperNetwork
from methods.hyperx import HyperXConfig
from tasks import demo


@pytest.mark.parametrize("code", ["hsb", "bre", "fao", "uig", "yor", "quy"])
def test_uriel_gives_289_finite_values(code):
    values = typology.uriel(code)
    assert len(values) == typology.SIZE == len(typology.feature_names())
    assert all(math.isfinite(v) for v in values) and set(values) <= {0.0, 1.0}


def test_uriel_takes_iso_639_1_codes_and_names_the_nearest_codes_it_lacks():
    assert typology.uriel("yo") == typology.uriel("yor")
    with pytest.raises(BenchError) as error:
        typology.uriel("oto")  # Otomian languages: a group, not a language URIEL has
    assert str(error.value).startswith("URIEL has no typological vector for language 'oto'")
    assert str(error.value).endswith("the nearest codes it has: ote, otm, otq, otr, otz")


def test_the_demo_typology_is_its_grammar_in_uriel_layout():
    names = set(typology.feature_names())
    for code in ("qaa", "qac", "qag"):
        assert set(demo.typology_features(code)) <= names  # no feature lost to a misspelling
    vectors = {code: demo.typology(code) for code in ("qaa", "qad", "qac", "qaf", "qag")}
    assert all(len(v) == typology.SIZE for v in vectors.values())
    features = demo.typology_features
    assert features("qaa")["S_SVO"] == features("qac")["S_SOV"] == features("qag")["S_VSO"] == 1
    assert features("qag")["S_TEND_PREFIX"] == features("qac")["S_ADPOSITION_AFTER_NOUN"] == 1
    distance = typology.distance
    # relatives are closer than the distant language, and the isolate is far from both
    assert distance(vectors["qaa"], vectors["qad"]) < distance(vectors["qaa"], vectors["qac"])
    assert distance(vectors["qac"], vectors["qaf"]) < distance(vectors["qac"], vectors["qaa"])
    assert distance(vectors["qaa"], vectors["qag"]) > distance(vectors["qaa"], vectors["qad"])


def _network(source: str, untrained=(), dropout=0.2) -> HyperNetwork:
    config = HyperXConfig(
        language_source=source, language_dropout=dropout, embedding_dim=8, source_dim=8,
        bottleneck=4,
    )  # fmt: skip
    vectors = torch.tensor([demo.typology(code) for code in ("qaa", "qag")])
    return HyperNetwork(["pos"], ["qaa", "qag"], 2, 16, config, vectors, untrained)


@pytest.mark.parametrize("source", ["typology", "both"])
def test_gradients_reach_the_typology_projector(source):
    torch.manual_seed(0)
    network = _network(source)
    weights = network(Pair("pos", "qag"))
    sum(w.square().sum() for w in weights.values()).backward()
    for parameter in network.typology_projector.parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    assert ("language_embedding" in dict(network.named_children())) == (source == "both")


def test_both_drops_the_learned_part_and_serves_an_untrained_language_by_typology_alone():
    torch.manual_seed(0)
    network = _network("both", untrained=("qag",), dropout=1.0)
    typological = network.typology_projector(network.typology[0])
    network.train()
    assert torch.equal(network.language(0), typological)  # dropped in training (p = 1)
    network.eval()
    learned = network.language_embedding.weight[0]
    assert torch.allclose(network.language(0), typological + learned)
    untrained = network.typology_projector(network.typology[1])
    assert torch.equal(network.language(1), untrained)  # qag's learned embedding never trained


def test_params_counts_the_typology_projector_as_its_own_part():
    options = {"language_source": "typology"}
    groups = {g.name: g for g in params.count("hyperx", "demo", 7, 3, options)}
    e = HyperXConfig().embedding_dim  # Linear(289, e), ReLU, Linear(e, e)
    assert groups["typology projector"].trained == (289 * e + e) + (e * e + e)
    assert "typology projector" not in {g.name for g in params.count("hyperx", "demo", 7, 3)}


def test_a_language_without_text_is_refused_under_learned_unless_opted_in(tmp_path, capsys):
    args = ["run", "--method", "hyperx", "--setting", "zero-text", "--output", str(tmp_path)]
    assert main([*args, "--max-steps", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot evaluate qae, qag" in err
    assert "method.language_source=typology" in err
    assert not (tmp_path / "mlflow.db").exists()
    request = runner.Request(
        method="hyperx", setting="zero-text", output=tmp_path, progress=False,
        train={**TINY, "max_steps": 4}, method_options={"untrained_languages": True},
    )  # fmt: skip
    result = runner.execute(runner.prepare(request))
    assert {"qae", "qag"} <= {r.language for r in result.pairs}


@pytest.mark.slow
def test_hyperx_on_typology_evaluates_the_languages_without_text(tmp_path, capsys):
    args = ["run", "--method", "hyperx", "--setting", "zero-text", "--output", str(tmp_path)]
    args += ["--set", "method.language_source=typology", "--no-progress"]
    args += [f"--set=train.{k}={v}" for k, v in TINY.items()]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "qae: language embedding from typology alone (no labels, no MLM text)" in out
    assert set(suites.get("demo").no_text) == {"qae", "qag"}
    assert "qag: language embedding from typology alone" in out


def test_zero_text_needs_a_suite_that_names_its_text_less_languages(tmp_path, capsys):
    two_language_files(tmp_path / "data")
    suite = two_language_suite(tmp_path / "data", {"test": "en-test.conllu"})
    path = tmp_path / "plain.toml"
    path.write_text(suite + '[settings.mixed]\ntrain = ["pos/en", "ner/de"]\n')
    assert main(["plan", "--suite", str(path), "--setting", "zero-text"]) == 2
    assert "names no languages without text (`no_text`" in capsys.readouterr().err
    path.write_text(f'no_text = ["de"]\n{suite}[settings.mixed]\ntrain = ["pos/en", "ner/de"]\n')
    assert main(["plan", "--suite", str(path), "--setting", "zero-text"]) == 0
    out = capsys.readouterr().out
    assert "setting zero-text" in out and "mlm" not in out.split("selection")[0]


def test_a_language_uriel_lacks_is_refused_before_the_run_unless_the_suite_maps_it(
    tmp_path, capsys
):
    two_language_files(tmp_path / "data")
    suite = two_language_suite(tmp_path / "data", {"test": "en-test.conllu"})
    suite = suite.replace("files.de", "files.gn").replace("de = {", "gn = {")
    path = tmp_path / "guarani.toml"
    setting = '[settings.mixed]\ntrain = ["pos/en", "ner/gn"]\n'
    path.write_text(suite + setting)
    args = ["run", "--suite", str(path), "--method", "hyperx", "--setting", "mixed"]
    args += ["--output", str(tmp_path / "out"), "--set", "method.language_source=typology"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no typological vector for language 'grn'" in err
    assert "gug (Paraguayan Guaraní)" in err and 'uriel = { grn = "..." }' in err
    assert not (tmp_path / "out").exists()
    path.write_text(f'uriel = {{ gn = "gug" }}\n{suite}{setting}')
    request = runner.Request(
        method="hyperx", setting="mixed", suite=str(path), output=tmp_path / "out",
        method_options={"language_source": "typology"},
    )  # fmt: skip
    suite = resolve(request)[0]
    assert typology.vector(suite, "gn") == typology.uriel("gug")
    assert main(["languages", "--suite", str(path), "gn"]) == 0
    assert "URIEL (gug)" in capsys.readouterr().out


def test_languages_prints_a_row_per_code(capsys):
    codes = "hsb bre fao uig kin lug wol zul twi bzd cni hch oto tar".split()  # noqa: SIM905
    assert main(["languages", *codes]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["code", "name", "typology"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert list(rows) == codes
    assert "Upper Sorbian" in rows["hsb"] and "URIEL" in rows["hsb"]
    assert " no " in rows["oto"]  # a language group URIEL has no vector for
    assert main(["languages", "qag", "en"]) == 0
    qag, en = capsys.readouterr().out.splitlines()[1:]
    assert "Zuvai" in qag and "suite" in qag and "mlm (train)" in qag
    assert "English" in en and "none" in en


def test_an_unknown_code_is_one_line_and_exit_2(capsys):
    assert main(["languages", "hsb", "xx"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        captured.err.strip() == "error: language 'xx' is not an ISO 639-1, ISO 639-3 or BCP-47 code"
    )


@pytest.mark.slow
def test_the_zero_resource_report_scores_each_route_beside_the_nearest_source(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs"
    routes = {"typology": {"language_source": "typology"}, "learned": {"untrained_languages": True}}
    for options in routes.values():
        request = runner.Request(
            method="hyperx-small", setting="zero-text", output=out, progress=False,
            tasks=("pos",), train={**TINY, "max_steps": 4, "eval_cap": 24},
            method_options=options,
        )  # fmt: skip
        runner.execute(runner.prepare(request))
    args = ["report", "--setting", "zero-text", "--output", str(out), "--bootstrap", "50"]
    assert main([*args, "--baseline", "hyperx-small (typology)"]) == 0
    text = (tmp_path / "reports" / "demo" / "zero-resource.md").read_text()
    section = text.split("## Languages with no text")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| pos/")]
    assert [row.split(" | ")[0] for row in rows] == ["| pos/qae", "| pos/qag"]
    vectors = {code: demo.typology(code) for code in ("qaa", "qac", "qae", "qag")}
    nearest = min(("qaa", "qac"), key=lambda s: typology.distance(vectors["qae"], vectors[s]))
    distance = typology.distance(vectors["qae"], vectors[nearest])
    assert rows[0].split(" | ")[1] == f"{nearest} ({distance:.3f})"
    assert all(row.count("[") == 2 for row in rows)  # an interval for each route
