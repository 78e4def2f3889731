"""`bench report` reads a suite's runs back from MLflow and compares the methods with bootstrap
intervals over the test examples; `bench.bootstrap` decomposes every metric per example."""

import statistics
from types import SimpleNamespace

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from bench import bootstrap, report, runner
from bench.bootstrap import Estimate
from bench.cli import main
from bench.evaluation import scored
from bench.metrics import METRICS
from bench.report import MethodRuns, Sample

TINY = dict(max_steps=2, eval_every=2, batch_size=4, eval_cap=24, train_cap=32, mlm_cap=32)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Real runs on NER and POS: `dummy` seeds 0, 1 after an older configuration of it (one
    step), `adapter` seeds 0, 1, and last a sweep trial of `dummy` with another learning rate."""
    out = tmp_path_factory.mktemp("runs")
    runs = [("dummy", 0, {"max_steps": 1}, {}), ("dummy", 0, {}, {}), ("dummy", 1, {}, {})]
    runs += [("adapter", seed, {}, {"bottleneck": 8}) for seed in (0, 1)]
    runs += [("dummy", 0, {}, {"lr": 0.01})]
    ids = []
    for method, seed, train, options in runs:
        request = runner.Request(
            method=method, setting="mixed", seed=seed, output=out, progress=False,
            tasks=("ner", "pos"), train={**TINY, **train}, method_options=options,
        )  # fmt: skip
        ids.append(runner.execute(runner.prepare(request)).run_id)
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    client.set_tag(ids[-1], report.SWEEP_TAG, "demo-dummy-mixed")
    return out, client, ids


@pytest.fixture(scope="module")
def written(store, tmp_path_factory):
    out = store[0]
    path = tmp_path_factory.mktemp("reports") / "mixed.md"
    args = ["report", "--output", str(out), "--baseline", "dummy", "--report", str(path)]
    assert main(args) == 0
    return path, path.read_text()


@pytest.fixture(scope="module")
def built(store, demo):
    uri = f"sqlite:///{store[0] / 'mlflow.db'}"
    return report.build(uri, demo, "mixed", baseline="dummy", replicates=1000)


def test_report_and_both_plots_are_written(written):
    path, text = written
    assert "Regenerate: `python -m bench report --output " in text and "--baseline dummy" in text
    for name in ("mixed-heatmap.png", "mixed-params.png"):
        assert (path.parent / name).read_bytes()[:4] == b"\x89PNG" and f"]({name})" in text
    assert text.index("](mixed-heatmap.png)") < text.index("## Average target score per task")
    assert "`dummy` 2 (seeds 0, 1), `adapter` 2 (seeds 0, 1)" in text  # the baseline first


def test_table_numbers_are_the_mlflow_means_and_intervals_hold_them(store, written, built):
    client, ids = store[1], store[2]
    kept = {"dummy": ids[1:3], "adapter": ids[3:5]}
    assert [m.name for m in built.methods] == ["dummy", "adapter"]
    assert {m.name: [r.info.run_id for r in m.runs] for m in built.methods} == kept
    summary = written[1].split("## Budgets")[0]
    rows = {line.split("`")[1]: line.split(" | ") for line in summary.splitlines()
            if line.startswith("| `") and " | 2 | " in line}  # fmt: skip
    for method, run_ids in kept.items():
        metrics = [client.get_run(i).data.metrics for i in run_ids]
        for column, task in enumerate(("ner", "pos"), start=2):
            mean = statistics.fmean(m[f"eval/{task}/avg_target"] for m in metrics)
            assert rows[method][column].startswith(f"{mean:.1f} ± ")
            estimate = built.estimates[(method, task)]
            assert estimate.point == pytest.approx(mean, abs=1e-9)
        for pair in built.pairs:
            key = f"eval/{pair}/{built.metric(pair.split('/')[0])}"
            mean = statistics.fmean(m[key] for m in metrics)
            assert built.estimates[(method, pair)].point == pytest.approx(mean, abs=1e-9)
    for estimate in built.estimates.values():
        assert estimate.low <= estimate.point <= estimate.high
    assert built.mismatch < 1e-9  # the per-example counts give back every logged score


NER_GOLD = [
    ["B-PER", "I-PER", "O", "B-LOC"],
    ["O", "O"],
    ["I-ORG", "I-ORG", "O"],  # I- without B-: seqeval reads an entity
    ["B-LOC", "I-LOC"],
    ["O"],
    ["B-PER", "B-PER", "I-ORG"],
]
NER_PREDICTED = [
    ["B-PER", "I-PER", "O", "B-ORG"],  # one entity right, one of the wrong type
    ["B-LOC", "O"],  # an entity where there is none
    ["B-ORG", "I-ORG", "O"],  # the same span as the I- entity
    ["B-LOC", None],  # a word lost to truncation: "O", so the entity is cut short
    ["O"],
    ["B-PER", "I-PER", None],
]


@pytest.mark.parametrize(
    ("metric", "gold", "predicted"),
    [
        ("f1", NER_GOLD, NER_PREDICTED),
        ("f1", [["O", "O"], ["O"]], [["O", "O"], ["O"]]),  # no entity anywhere: 0, as seqeval
        ("f1", [["O", "B-PER"]], [["O", None]]),
        ("accuracy", [["NOUN", "VERB", "DET"], ["PUNCT"]], [["NOUN", "NOUN", None], ["PUNCT"]]),
        ("accuracy", ["entailment", "neutral", "neutral"], ["entailment", "neutral", "neutral"]),
        ("accuracy", ["entailment", "neutral", "contradiction"], ["neutral"] * 3),
    ],
)
@pytest.mark.filterwarnings("ignore:F-score is ill-defined")  # seqeval, on no entity at all
def test_per_example_counts_add_up_to_the_metric(metric, gold, predicted):
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"] if metric == "f1" else []
    predicted = scored(predicted, labels)  # None: a word lost to truncation, as in evaluation
    counts = bootstrap.counts(metric, gold, predicted)
    assert counts.shape == (len(gold), 3 if metric == "f1" else 2)
    expected = METRICS[metric](gold, predicted)
    assert abs(float(bootstrap.score(metric, counts.sum(axis=0))) - expected) < 1e-9


def _sample(gold, predicted, seeds=2):
    counts = bootstrap.counts("f1", gold, predicted)
    return Sample("f1", str(gold), np.stack([counts] * seeds))


def test_paired_bootstrap_win_rate_and_verdicts():
    rng = np.random.default_rng(1)
    gold = [["B-PER", "I-PER", "O", "B-LOC"] if rng.random() < 0.7 else ["O"] * 4
            for _ in range(300)]  # fmt: skip
    noisy = [[t if rng.random() < 0.7 else "O" for t in sentence] for sentence in gold]
    methods = [
        MethodRuns("base", [], [], {"ner/x": _sample(gold, noisy)}),
        MethodRuns("same", [], [], {"ner/x": _sample(gold, noisy)}),
        MethodRuns("better", [], [], {"ner/x": _sample(gold, gold)}),
        MethodRuns("elsewhere", [], [], {"ner/x": _sample(gold[:-1], noisy[:-1])}),
    ]
    estimates, differences, _ = report.intervals(methods, "base", 1000)
    same, better = differences[("same", "ner")], differences[("better", "ner/x")]
    assert same.win_rate == 0.5 and same.verdict == "not distinguishable"
    assert same.estimate.point == same.estimate.low == same.estimate.high == 0.0
    assert better.win_rate > 0.99 and better.verdict == "better" and better.estimate.low > 0
    assert differences[("elsewhere", "ner")] is None  # other examples: not paired
    assert estimates[("better", "ner")].point == 100.0
    again = report.intervals(methods, "base", 1000)[0]
    assert again[("base", "ner")] == estimates[("base", "ner")]  # seeded: reproducible


def test_a_selection_rule_is_paired_with_its_own_method_not_the_baseline():
    assert report.rule_of("adapter (mlm) [average, bf16]") == ("adapter (mlm) [bf16]", "average")
    assert report.rule_of("hyperx [run average]") == ("hyperx", "run average")
    assert report.rule_of("hyperx [bf16]") is None and report.rule_of("adapter (mlm)") is None
    rng = np.random.default_rng(2)
    gold = [["B-PER", "I-PER", "O"] if rng.random() < 0.6 else ["O"] * 3 for _ in range(200)]
    worse = [[t if rng.random() < 0.5 else "O" for t in sentence] for sentence in gold]
    methods = [
        MethodRuns("base", [], [], {"ner/x": _sample(gold, worse)}),
        MethodRuns("lora", [], [], {"ner/x": _sample(gold, gold)}),
        MethodRuns("lora [average]", [], [], {"ner/x": _sample(gold, worse)}),
        MethodRuns("lora [last]", [], [], {"ner/x": _sample(gold, gold)}),
    ]
    _, differences, rules = report.intervals(methods, "base", 500)
    assert set(rules) == {
        (n, s) for n in ("lora [average]", "lora [last]") for s in ("ner", "ner/x")
    }
    assert rules[("lora [average]", "ner")].verdict == "worse"  # against `lora`, not `base`
    assert differences[("lora [average]", "ner")].estimate.point == 0.0
    assert rules[("lora [last]", "ner")].estimate.point == 0.0


def test_the_reading_names_no_tie_between_a_method_and_its_own_same_weights():
    names = ["base", "lora", "lora [last]", "lora [average]", "adapter"]
    points = {"base": 20.0, "lora": 33.4, "lora [last]": 33.4, "lora [average]": 30.0}
    estimates = {(n, "ner"): Estimate(v, v - 1, v + 1) for n, v in points.items()}
    estimates[("adapter", "ner")] = Estimate(33.0, 32.0, 34.0)
    found = SimpleNamespace(
        methods=[MethodRuns(n, [], [], {}) for n in names], estimates=estimates,
        differences={}, baseline="base", reference=lambda name, task: None,
    )  # fmt: skip
    (line,) = report._reading(found, ["ner"])
    assert line.startswith("- ner: highest mean `lora` 33.4 [32.4, 34.4] (so do `lora [last]`")
    estimates[("adapter", "ner")] = Estimate(33.4, 32.0, 34.0)  # another method: a real tie
    (line,) = report._reading(found, ["ner"])
    assert line.startswith("- ner: no highest mean, `lora`, `adapter` tie at 33.4 (so do")


def test_sweep_runs_and_an_older_configuration_are_left_out_and_said(written, built):
    text = written[1]
    assert f"- 1 run tagged `{report.SWEEP_TAG}`" in text
    older = "- `dummy`: 1 run of an older configuration (`train.max_steps` 1 where the kept runs"
    assert older + " have 2)" in text
    assert all(r.data.params["method.lr"] != "0.01" for m in built.methods for r in m.runs)


def test_a_baseline_named_without_bf16_is_its_bf16_runs_where_it_has_only_those():
    def run(method, precision):
        params = {"train.selection": "source-dev", "train.precision": precision}
        return SimpleNamespace(data=SimpleNamespace(tags={"method": method}, params=params))

    runs = [run("hyperx", "bf16"), run("lora", "bf16"), run("lora", "fp32")]
    assert report.resolve_baseline(runs, "hyperx") == "hyperx [bf16]"
    assert report.resolve_baseline(runs, "lora") == "lora"  # it has fp32 runs: those
    assert report.resolve_baseline(runs, "lora [bf16]") == "lora [bf16]"
    assert report.resolve_baseline(runs, "madx") == "madx"  # no runs: said in the report
    for index, made in enumerate(runs):
        made.info = SimpleNamespace(start_time=index)
    runs.append(run("lora", "bf16"))
    runs[-1].data.params["train.selection"] = "average"
    runs[-1].info = SimpleNamespace(start_time=len(runs))
    rows = [m.name for m in report._group(runs, "hyperx [bf16]")]
    assert rows == ["hyperx [bf16]", "lora", "lora [bf16]", "lora [average, bf16]"]


def test_a_baseline_without_runs_is_one_line(store, tmp_path):
    path = tmp_path / "mixed.md"
    assert main(["report", "--output", str(store[0]), "--report", str(path)]) == 0
    section = path.read_text().split("## Against `hyperx`, paired")[1].split("##")[0]
    expected = "`hyperx` has no runs here: no paired comparison (--baseline: adapter, dummy)."
    assert section.strip() == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--suite", "demoo"], "unknown suite 'demoo'"),
        (["--setting", "few-shot"], "no finished runs of setting 'few-shot'"),
        (["--filter", "params.nope ~ 1"], "--filter 'params.nope ~ 1' is invalid"),
        (["--bootstrap", "0"], "--bootstrap 0 is invalid"),
        (["--output", "{tmp}/none"], "there is no MLflow store"),
        (["--tracking-uri", "sqlite:///{tmp}/other.db"], "no experiment 'demo' in"),
        (["--tracking-uri", "http://127.0.0.1:9"], "tracking server http://127.0.0.1:9 cannot be"),
        (["--report", "{tmp}/file/x.md"], "report path"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(store, tmp_path, capsys, args, message):
    MlflowClient(f"sqlite:///{tmp_path}/other.db").create_experiment("other")
    (tmp_path / "file").write_text("")
    capsys.readouterr()  # MLflow's notes on creating that store
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    reports = tmp_path / "reports"
    command = ["report", "--output", str(store[0]), "--report", str(reports / "x.md"), *args]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "other.db"]  # no report


def test_target_scores_that_do_not_beat_the_lookup_reference_are_marked():
    from bench.evaluation import PairResult

    def pair(language, role, score, **references):
        return PairResult("pos", language, "test", role, "all", "accuracy", score, references,
                          [], [])  # fmt: skip

    table = report.results_table([
        pair("eng", "source", 90.0, majority=13.8, lookup=79.7),
        pair("yor", "target", 29.5, majority=20.0, lookup=31.1),  # below lookup: marked
        pair("wol", "target", 45.0, majority=30.0, lookup=40.0),
        pair("xyz", "target", 25.0, majority=25.0),  # no lookup: the majority is the bar
    ]).splitlines()  # fmt: skip
    rows = {line.split()[1]: line for line in table[1:-1]}
    assert "29.5 ‡" in rows["yor"] and "25.0 ‡" in rows["xyz"]
    assert "‡" not in rows["wol"] and "‡" not in rows["eng"]  # a source is never marked
    assert "33.2" in rows["avg"] and "‡" not in rows["avg"]  # 33.2 against the lookup's avg: -
    assert table[-1].startswith("‡ not above the word-lookup reference")
    assert rows["yor"].index("29.5") == rows["wol"].index("45.0")  # the digits stay aligned
    assert report.marked(31.1, {"majority": 20.0, "lookup": 31.1}, "31.1") == "31.1 ‡"
    assert report.marked(50.0, {"majority": None, "lookup": None}, "50.0") == "50.0"
    served = report.results_table([pair("yor", "target", 29.5)], notes={"yor": "no text"})
    assert "yor §" in served and served.endswith("\n§ yor: no text")


def test_figures_say_what_they_average_and_scale_colours_from_the_majority_to_100(built):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    heatmap = report._heatmap(built, pyplot)
    assert "mean over 2 seeds" in heatmap._suptitle.get_text()
    images = [ax.images[0] for ax in heatmap.axes if ax.images]
    assert len(images) == len(built.tasks) and len(heatmap.axes) == 2 * len(built.tasks)  # bars
    for image, task in zip(images, built.tasks, strict=True):
        low, high = image.get_clim()
        majority = min(built.reference("majority", p) for p in built.pairs_of(task))
        assert high == 100.0 and low <= majority
    params = report._params_plot(built, pyplot)
    assert all("mean ± sd over 2 seeds" in ax.get_title() for ax in params.axes)
    assert report.seeds_text([1, 1]) == "1 seed" and report.seeds_text([1, 3]) == "1-3 seeds"
    pyplot.close("all")
