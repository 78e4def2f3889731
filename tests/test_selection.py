"""Zero-shot model selection: the last weights, the average of the evaluation points, the
oracle kept apart from every zero-shot number, and leakage by content."""

from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file
from test_formats import conllu
from test_run import tiny_run
from test_suitefile import two_language_files, two_language_suite

from bench import averaging, report, runner, selection
from bench.cli import main
from bench.tracking import NOT_LEARNED, input_params

# evaluation points at 10, 20 and 30 labelled steps
TINY = {"eval_cap": 40, "eval_every": 10}
ZERO_SHOT = ("eval/", "select/")


@pytest.fixture()
def points(monkeypatch):
    """The trainable weights at every evaluation point of the runs the test makes, copied when
    the source dev score is computed, apart from what the selection rules keep."""
    seen = []
    score = runner._select

    def recorded(prepared, plan, model, collator, tracker, step, last):
        if step is not None:  # not the averaged weights' own score
            seen.append({k: v.clone() for k, v in selection.trainable_state(model).items()})
        return score(prepared, plan, model, collator, tracker, step, last)

    monkeypatch.setattr(runner, "_select", recorded)
    return seen


@pytest.fixture()
def content_suite(tmp_path):
    """A suite file over files written here, every split of its own sentences: POS in English
    (train, dev, test) and German (dev, test: a target), NER in German, German MLM text.
    `content_suite(old, new)` edits it (`{data}`: the files' folder); `shared_line` makes one
    English test sentence a training one; `select` replaces the selection pairs."""
    data = tmp_path / "data"
    two_language_files(data, "en", en_count=5)  # 10 sentences a split
    for split in ("dev", "test"):
        (data / f"de-pos-{split}.conllu").write_text(conllu(f"de{split}", 5))
    (data / "de-test-text.txt").write_text(
        "".join(f"Ada Lovelace in London-test{i}\n" for i in range(6))
    )
    german_pos = {"dev": "de-pos-dev.conllu", "test": "de-pos-test.conllu"}
    template = (
        two_language_suite("{data}", german_pos)
        + """[settings.mixed]
train = ["pos/en", "ner/de"]
select = SELECT
"""
    )

    def write(old="", new="", shared_line=False, select='["pos/en", "ner/de"]'):
        if shared_line:
            text = conllu("entest", 5).replace("go-entest0", "go-entrain0")
            (data / "en-test.conllu").write_text(text)
        text = template.replace(old, new).replace("SELECT", select)
        path = tmp_path / "content.toml"
        path.write_text(text.replace("{data}", str(data)))
        return path

    return write


def _kept(tmp_path, result):
    return load_file(str(runner.checkpoint_folder(tmp_path, result.run_id) / "all.safetensors"))


@pytest.mark.parametrize("rule", ["average", "last"])
def test_average_and_last_keep_the_weights_they_name(tmp_path, points, rule):
    result = tiny_run(tmp_path, train={**TINY, "selection": rule})
    assert len(points) == 3
    expected = {
        name: torch.stack([p[name].double() for p in points]).mean(0)
        if rule == "average"
        else points[-1][name].double()
        for name in points[0]
    }
    kept = _kept(tmp_path, result)
    assert kept.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(kept[name].double(), value, rtol=1e-6, atol=1e-7)
    if rule == "average":  # weights that moved: the average is none of the points
        assert any(not torch.equal(kept[n], points[-1][n]) for n in kept)
    folder = runner.checkpoint_folder(tmp_path, result.run_id)
    assert [p.name for p in folder.iterdir()] == ["all.safetensors"]  # the sums are gone


def test_other_rules_test_the_same_training_as_the_runs_of_those_rules(tmp_path, capsys):
    assert main(["run", "--method", "dummy", "--selection", "source-dev,last,last"]) == 2
    assert "'last' is not a rule other than the run's own" in capsys.readouterr().err
    result = tiny_run(tmp_path / "one", train={**TINY, "also_selection": "last,average"})
    client = MlflowClient(result.tracking_uri)
    runs = client.search_runs([result.experiment_id])
    siblings = {r.data.params["train.selection"]: r for r in runs if r.info.run_id != result.run_id}
    assert set(siblings) == {"last", "average"} and len(runs) == 3
    own = client.get_run(result.run_id).data
    for rule, sibling in siblings.items():
        alone = tiny_run(tmp_path / rule, train={**TINY, "selection": rule})
        assert sibling.info.status == "FINISHED"
        assert sibling.data.tags["same_training"] == result.run_id
        # the params of a run asked for this rule alone, and its every score
        asked = MlflowClient(alone.tracking_uri).get_run(alone.run_id).data
        assert input_params(sibling.data.params) == input_params(asked.params)
        assert sibling.data.tags.get(NOT_LEARNED) == asked.tags.get(NOT_LEARNED)  # its own
        for key, value in alone.metrics.items():
            if key.startswith(("eval/", "reference/", "select/score")):
                assert sibling.data.metrics[key] == pytest.approx(value), key
        # the training's cost, which it shares
        for key in ("budget/labelled_steps", "budget/train_flops", "time/train_s"):
            assert sibling.data.metrics[key] == own.metrics[key]
        kept = runner.checkpoint_folder(tmp_path / "one", sibling.info.run_id) / "all.safetensors"
        assert load_file(str(kept)).keys() == _kept(tmp_path / rule, alone).keys()
        assert report.label(sibling) == f"dummy [{rule}]"
    scores = [k for k in result.metrics if k.startswith("eval/")]  # not the run's own weights
    assert any(siblings["average"].data.metrics[k] != result.metrics[k] for k in scores)
    folder = runner.checkpoint_folder(tmp_path / "one", result.run_id)
    assert [p.name for p in folder.iterdir()] == ["all.safetensors"]


def test_weights_two_rules_kept_from_one_step_are_tested_once(tmp_path, monkeypatch):
    real_select, real_evaluate, rising, tested = runner._select, runner.evaluate, [], []

    def select(*args):  # scores that rise at every point: source dev picks the last step
        real_select(*args)
        rising.append(len(rising))
        return float(rising[-1])

    def evaluate(model, task, data, e, refs, *rest):
        if refs is not None:  # a test split (model selection passes no references)
            tested.append(str(e.pair))
        return real_evaluate(model, task, data, e, refs, *rest)

    monkeypatch.setattr(runner, "_select", select)
    monkeypatch.setattr(runner, "evaluate", evaluate)
    result = tiny_run(tmp_path, train={**TINY, "also_selection": "last,average"})
    # the run's own weights and the average's, each pair once; `last` is the run's own step
    assert tested and set(Counter(tested).values()) == {2}
    client = MlflowClient(result.tracking_uri)
    (last,) = client.search_runs([result.experiment_id], "params.`train.selection` = 'last'")
    scores = {k: v for k, v in result.metrics.items() if k.startswith("eval/")}
    assert scores and all(last.data.metrics[k] == v for k, v in scores.items())


def test_a_run_interrupted_between_its_rules_runs_logs_the_rest_when_resumed(tmp_path, monkeypatch):
    logged = runner.same_training_run

    def interrupted(prepared, tracker, rule, *args):
        if rule == "average":
            raise KeyboardInterrupt
        return logged(prepared, tracker, rule, *args)

    monkeypatch.setattr(runner, "same_training_run", interrupted)
    train = {**TINY, "also_selection": "last,average"}
    with pytest.raises(KeyboardInterrupt):
        tiny_run(tmp_path, train=train)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = [client.get_experiment_by_name("demo").experiment_id]
    (stopped,) = [r for r in client.search_runs(experiment) if "same_training" not in r.data.tags]
    assert stopped.info.status == "KILLED"
    monkeypatch.setattr(runner, "same_training_run", logged)
    result = tiny_run(tmp_path, train=train, resume=stopped.info.run_id)
    runs = client.search_runs(experiment)
    rules = sorted(r.data.params["train.selection"] for r in runs)
    assert rules == ["average", "last", "source-dev"]  # the last rule's run logged once
    assert all(r.info.status == "FINISHED" for r in runs) and result.run_id == stopped.info.run_id


def test_plan_lists_the_target_dev_splits_the_oracle_scores_only_when_it_is_on(capsys):
    assert main(["plan", "--setting", "mixed"]) == 0
    assert "  oracle " not in capsys.readouterr().out
    assert main(["plan", "--setting", "mixed", "--set", "train.oracle=true"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    oracle = [row[1] for row in rows if row[:1] == ["oracle"]]
    # the demo's targets with a dev split (5 NER, 5 POS, 6 NLI), never a source's
    assert len(oracle) == 16 and all(p.endswith("@dev") for p in oracle), oracle
    assert "ner/qac@dev" in oracle and "ner/qaa@dev" not in oracle


def test_the_oracle_is_logged_apart_and_changes_no_zero_shot_number(tmp_path):
    plain = tiny_run(tmp_path / "plain", train=TINY)
    oracle = tiny_run(tmp_path / "oracle", train={**TINY, "oracle": True})
    zero_shot = {k: v for k, v in plain.metrics.items() if k.startswith(ZERO_SHOT)}
    assert zero_shot == {k: v for k, v in oracle.metrics.items() if k.startswith(ZERO_SHOT)}
    added = set(oracle.metrics) - set(plain.metrics)
    # besides oracle/: the word counts of the target dev splits it read (words/TASK/LANG/dev/..)
    assert all(k.startswith("oracle/") or "/dev/" in k for k in added), sorted(added)
    assert any(k.startswith("oracle/") for k in added)
    # the demo's targets with a dev split: every NER and POS target, and NLI's
    assert oracle.metrics["oracle/ner/targets"] == 5 and oracle.metrics["oracle/nli/targets"] == 6
    for task in ("ner", "pos", "nli"):
        assert 0 <= oracle.metrics[f"oracle/{task}/avg_target"] <= 100
    assert oracle.metrics["oracle/all/checkpoints"] == 3
    assert -1 <= oracle.metrics.get("oracle/all/spearman", 0) <= 1
    assert oracle.metrics["oracle/all/selection_gap"] >= 0


def test_spearman_ranks_ties_and_the_gap_is_measured_at_the_first_best_checkpoint():
    assert selection.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert selection.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks of [1, 2, 2, 3] are 1, 2.5, 2.5, 4; Pearson's r of them with 1..4
    assert selection.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833)
    assert selection.spearman([1, 1, 1], [1, 2, 3]) is None
    curve = [[10, 50.0, 30.0], [20, 60.0, 20.0], [30, 60.0, 40.0]]
    metrics = selection.curve_metrics("all", curve)
    assert metrics["oracle/all/selection_gap"] == 20.0  # source dev keeps step 20 (first 60)
    assert metrics["oracle/all/checkpoints"] == 2 + 1


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('dev = "{data}/en-dev.conllu"', 'dev = "{data}/en-test.conllu"'),  # a test file as dev
        ('de = { train = "{data}/de.txt" }', 'de = { train = "{data}/de-test-text.txt" }'),
    ],
    ids=["test file as dev", "test sentences as MLM text"],
)
def test_content_shared_with_a_test_split_is_refused(content_suite, tmp_path, capsys, old, new):
    assert main(["plan", "--suite", str(content_suite())]) == 0
    capsys.readouterr()
    suite = content_suite(old, new)
    out = tmp_path / "runs"
    run = ["run", "--method", "dummy", "--set", "method.mlm=true", "--output", str(out)]
    for args in (["plan"], run):  # the dummy method with MLM reads the MLM text
        assert main([*args, "--suite", str(suite)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: leakage by content: ") and err.count("\n") == 1
        assert "(100.0%)" in err and err.count("/data/") == 2  # the two files, named
    assert not out.exists()


def test_a_few_shared_sentences_are_reported_and_left_out_of_training(content_suite, capsys):
    suite = content_suite(shared_line=True)
    assert main(["plan", "--suite", str(suite)]) == 0
    out = capsys.readouterr().out
    assert "which shares 1 of its 10 sentences (10.0%) with" in out and "REFUSED" not in out
    assert "model all: 1 of pos/eng@train" in out
    assert main(["plan", "--suite", str(suite), "--set", "train.deduplicate=false"]) == 0
    assert "left out" not in capsys.readouterr().out


def test_selecting_on_a_target_dev_split_is_refused_with_the_oracle_too(content_suite, capsys):
    suite = content_suite(select='["pos/en", "ner/de", "pos/de@dev"]')
    assert main(["run", "--method", "dummy", "--suite", str(suite), "--oracle"]) == 2
    assert "selects on pos/deu@dev, a target pair it evaluates" in capsys.readouterr().err


def test_a_label_names_the_rule_the_run_average_and_bf16():
    def run(tags, **params):
        data = SimpleNamespace(tags={"method": "hyperx", **tags}, params=params)
        return SimpleNamespace(data=data)

    assert report.label(run({})) == "hyperx"
    assert report.label(run({}, **{"train.precision": "fp32"})) == "hyperx"
    both = {"train.selection": "last", "train.precision": "bf16"}
    bf16 = run({"variant": "hyperx (typology)"}, **both)
    assert report.label(bf16) == "hyperx (typology) [last, bf16]"
    assert report.label(run({"run_average": "a,b"})) == "hyperx [run average]"


def test_the_report_shows_each_rule_as_a_row_and_the_oracle_apart(tmp_path):
    for rule in ("source-dev", "average"):
        tiny_run(tmp_path, train={**TINY, "selection": rule, "oracle": True})
    path = tmp_path / "report.md"
    args = ["report", "--output", str(tmp_path), "--baseline", "dummy", "--report", str(path)]
    assert main(args) == 0
    text = path.read_text()
    assert "Runs per method: `dummy` 1 (seed 0), `dummy [average]` 1 (seed 0)." in text
    oracle = text[text.index("## Oracle bound: selected on target dev data, not zero-shot") :]
    assert "| method | ner zero-shot | ner oracle (target dev) |" in oracle
    assert "(5 pairs)" in oracle and (tmp_path / "report-selection.png").stat().st_size > 0


def test_compare_adds_a_run_average_row_and_reuses_it(tmp_path):
    out, path = tmp_path / "runs", tmp_path / "compare.md"
    args = ["compare", "--methods", "dummy", "--seeds", "2", "--max-steps", "4", "--run-average"]
    args += ["--set", "train.eval_every=2", "--output", str(out), "--report", str(path), "--reuse"]
    assert main(args) == 0
    summary = path.read_text().split("## Budgets")[0]
    rows = [line.split(" | ")[:2] for line in summary.splitlines() if line.startswith("| `d")]
    assert [(m.strip("| †"), s) for m, s in rows] == [
        ("`dummy`", "mixed"),
        ("`dummy [run average]`", "mixed"),
    ]
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("demo").experiment_id
    runs = client.search_runs([experiment], order_by=["attributes.start_time ASC"])
    (average,) = [r for r in runs if averaging.TAG in r.data.tags]
    seeds = [r for r in runs if r is not average]
    assert average.data.tags[averaging.TAG] == ",".join(r.info.run_id for r in seeds)
    assert average.data.params["seed"] == "0+1" and report.label(average) == "dummy [run average]"
    steps = "budget/labelled_steps"  # it cost both runs
    assert average.data.metrics[steps] == sum(r.data.metrics[steps] for r in seeds)
    kept = [load_file(str(out / "checkpoints" / r.info.run_id / "all.safetensors")) for r in runs]
    assert kept[0].keys() == kept[2].keys()
    for name, value in kept[-1].items():  # the average's weights: the mean of the seeds'
        mean = (kept[0][name].double() + kept[1][name].double()) / 2
        torch.testing.assert_close(value.double(), mean, rtol=1e-6, atol=1e-7)
    assert main(args) == 0  # with --reuse, nothing runs again
    assert len(client.search_runs([experiment])) == 3
    written = tmp_path / "report.md"  # the average trained on its seeds' batches, no others
    assert main(["report", "--output", str(out), "--report", str(written)]) == 0
    assert "Compared: the same labelled batches;" in written.read_text()
