"""Fair comparisons: the same labelled batches for every method, budgets counted and logged,
equal tuning, reports that show budgets and runs that did not learn."""

from pathlib import Path

import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient

from bench import runner
from bench.cli import main
from bench.data import PairSampler
from bench.report import REPORTS

QUICK = {"max_steps": 24, "eval_every": 12, "batch_size": 8, "eval_cap": 40, "mlm_cap": 200}


def _run(output, method, budget="labelled", **options):
    request = runner.Request(
        method=method, output=output, progress=False, train={**QUICK, "budget": budget},
        method_options=options,
    )  # fmt: skip
    result = runner.execute(runner.prepare(request))
    run = MlflowClient(result.tracking_uri).get_run(result.run_id)
    return run.data.metrics, run.data.params, run.data.tags


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """hyperx (MLM on) and adapter (MLM off), seed 0, under each budget policy."""
    output = tmp_path_factory.mktemp("runs")
    return {
        (method, budget): _run(output, method, budget, bottleneck=16)
        for method in ("hyperx", "adapter")
        for budget in ("labelled", "total")
    }


def test_every_method_trains_on_the_same_labelled_batches_under_the_labelled_budget(runs):
    (hx, hx_params, _), (ad, ad_params, _) = (
        runs[("hyperx", "labelled")],
        runs[("adapter", "labelled")],
    )
    assert hx_params["budget.labelled_stream"] == ad_params["budget.labelled_stream"]
    assert hx["budget/labelled_steps"] == ad["budget/labelled_steps"] == QUICK["max_steps"]
    assert hx["budget/labelled_tokens"] == ad["budget/labelled_tokens"]
    assert hx["budget/mlm_steps"] > 0 and ad["budget/mlm_steps"] == 0
    assert hx["budget/train_flops"] > ad["budget/train_flops"] > 0


def test_under_the_total_budget_mlm_batches_come_out_of_the_steps(runs):
    (hx, hx_params, _), (ad, ad_params, _) = runs[("hyperx", "total")], runs[("adapter", "total")]
    assert hx["budget/labelled_steps"] + hx["budget/mlm_steps"] == QUICK["max_steps"]
    assert hx["budget/labelled_steps"] < ad["budget/labelled_steps"] == QUICK["max_steps"]
    assert hx_params["budget.labelled_stream"] != ad_params["budget.labelled_stream"]
    assert hx_params["train.budget"] == "total"


def test_budget_metrics_match_the_batches_drawn(tmp_path, monkeypatch):
    """The sampler's draws, recorded outside the runner, against what the run logged."""
    drawn = []
    original = PairSampler.__iter__

    def recording(self):
        for pair, indices in original(self):
            drawn.append((pair, indices))
            yield pair, indices

    monkeypatch.setattr(PairSampler, "__iter__", recording)
    request = runner.Request(
        method="dummy", output=tmp_path, progress=False, train=QUICK,
        method_options={"mlm": True},
    )  # fmt: skip
    prepared = runner.prepare(request)
    result = runner.execute(prepared)
    metrics = result.metrics
    lengths = {}  # pair -> each training example's non-padding tokens, read from the data
    for key, data in prepared.data.items():
        if key[0] == "train":
            lengths[data.pair] = [len(ids) for ids in data.encoded["input_ids"]]
    labelled = [(p, i) for p, i in drawn if p.task != "mlm"]
    mlm = [(p, i) for p, i in drawn if p.task == "mlm"]
    tokens = {name: sum(lengths[p][j] for p, i in batches for j in i)
              for name, batches in (("labelled", labelled), ("mlm", mlm))}  # fmt: skip
    assert metrics["budget/labelled_steps"] == len(labelled) == QUICK["max_steps"]
    assert metrics["budget/mlm_steps"] == len(mlm) > 0
    assert metrics["budget/labelled_tokens"] == tokens["labelled"]
    assert metrics["budget/mlm_tokens"] == tokens["mlm"]
    assert metrics["tokens/train"] == tokens["labelled"] + tokens["mlm"]
    assert metrics["budget/stage_steps"] == metrics["budget/stage_tokens"] == 0
    assert metrics["budget/train_flops"] > 0


def test_stages_taken_from_the_cache_count_in_the_budget(tmp_path, caplog):
    options = {"lang_steps": 3, "lang_batch_size": 4, "task_reduction": 8}
    repeated = "There are adapters available but none are activated for the forward pass."
    first, _, _ = _run(tmp_path, "madx", **options)
    shown = [r for r in caplog.records if r.getMessage() == repeated]
    assert len(shown) == 1  # `adapters` says it once per stage and evaluation: shown once a run
    caplog.clear()
    again, _, _ = _run(tmp_path, "madx", **options)
    assert len([r for r in caplog.records if r.getMessage() == repeated]) <= 1
    languages = 7  # every language of the demo suite has text: one adapter each
    assert first["stages/trained"] == languages and again["stages/trained"] == 0
    assert again["stages/cached"] == languages
    for key in ("budget/stage_steps", "budget/stage_tokens", "budget/stage_flops",
                "budget/stage_s"):  # fmt: skip
        assert again[key] == first[key] > 0
    assert again["budget/stage_steps"] == languages * options["lang_steps"]
    assert again["budget/train_flops"] > again["budget/stage_flops"]


def test_the_adapter_with_mlm_is_named_apart_and_trains_mlm(tmp_path):
    metrics, _, tags = _run(tmp_path, "adapter", mlm=True, bottleneck=16)
    assert tags["variant"] == "adapter (mlm)" and tags["method"] == "adapter"
    assert metrics["budget/mlm_steps"] > 0
    _, _, plain = _run(tmp_path, "adapter", bottleneck=16)
    assert plain["variant"] == "adapter"


def test_a_run_that_cannot_learn_says_so_and_is_tagged(tmp_path, capsys):
    code = main(["run", "--method", "dummy", "--lr", "1e-9", "--output", str(tmp_path),
                 "--no-progress", *[f"--set=train.{k}={v}" for k, v in QUICK.items()]])  # fmt: skip
    assert code == 0  # a warning, not a failure
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning:")]
    assert "did not learn" in line and "pos/qaa" in line
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("demo").experiment_id])
    assert "pos/qaa" in run.data.tags["warning.not_learned"]


def test_compare_tunes_every_method_equally_then_runs_the_grid_with_the_best(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the report goes under ./reports
    output = tmp_path / "runs"
    args = ["compare", "--methods", "dummy,dummy:mlm=true", "--tune", "2", "--seeds", "1",
            "--max-steps", "12", "--set", "train.eval_every=6", "--set", "train.eval_cap=40",
            "--output", str(output)]  # fmt: skip
    assert main(args) == 0
    storage = f"sqlite:///{output / 'optuna.db'}"
    studies = optuna.get_all_study_summaries(storage)
    assert len(studies) == 2
    client = MlflowClient(f"sqlite:///{output / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("demo").experiment_id
    grid = client.search_runs([experiment], "tags.`tune.study` != ''")
    assert len(grid) == 2
    for run in grid:
        study = optuna.load_study(study_name=run.data.tags["tune.study"], storage=storage)
        assert len([t for t in study.trials if t.state.is_finished()]) == 2
        assert run.data.tags["tune.trials"] == "2"
        for key, value in study.best_trial.params.items():
            assert float(run.data.params[key]) == pytest.approx(value)
    assert {r.data.tags["variant"] for r in grid} == {"dummy", "dummy (mlm)"}
    text = (tmp_path / "reports" / "demo" / "compare-mixed.md").read_text()
    assert "## Tuning" in text and "| `dummy (mlm)` | `tune-demo-dummy-mlm-mixed-" in text
    # the exact values, as the entry's tail: the study's best values, unrounded, and so the
    # same params: the grid given them, untuned, finds the tuned grid's run and trains none
    (run,) = [r for r in grid if r.data.tags["variant"] == "dummy"]
    study = optuna.load_study(study_name=run.data.tags["tune.study"], storage=storage)
    tail = next(x for x in text.splitlines() if x.startswith("- `dummy`: ")).split("`")[3]
    parsed = dict(o.split("=") for o in tail.strip(":").split(":"))
    best = {k.removeprefix("method."): v for k, v in study.best_trial.params.items()}
    assert {k: float(v) for k, v in parsed.items()} == best
    before = len(client.search_runs([experiment]))
    assert main(["compare", "--methods", f"dummy{tail}", "--seeds", "1", *args[7:], "--reuse"]) == 0
    assert len(client.search_runs([experiment])) == before
    assert "the same labelled batches" in text and "**unequal MLM steps" in text
    # --reuse finds the tuned runs and the finished studies: no new run, no new trial, and the
    # studies' parent runs stay as they ended (no new metric points, the same end time)
    parents = client.search_runs([experiment], "attributes.run_name LIKE 'sweep-%'")
    assert len(parents) == 2 and {p.info.status for p in parents} == {"FINISHED"}

    def history(run):
        points = client.get_metric_history(run.info.run_id, "sweep/best_score")
        return run.info.end_time, len(points)

    ended = {p.info.run_id: history(p) for p in parents}
    assert main([*args, "--reuse"]) == 0
    assert len(client.search_runs([experiment], "tags.`tune.study` != ''")) == 2
    assert {r: history(client.get_run(r)) for r in ended} == ended
    # a grid stopped after its tuning runs its grid, not the best trials' runs (a sweep's own)
    for run in grid:
        client.delete_run(run.info.run_id)
    assert main([*args, "--reuse"]) == 0
    assert len(client.search_runs([experiment], "tags.`tune.study` != ''")) == 2


def test_reports_are_written_under_the_current_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["params", "--method", "dummy,lora", "--languages", "2,4"]) == 0
    written = tmp_path / "reports" / "params-mbert-base.md"
    assert written.is_file()
    assert f"written to {written}" in capsys.readouterr().out
    package = Path(runner.__file__).resolve().parent.parent
    assert not REPORTS.is_absolute() and package != tmp_path


def test_hyperx_projector_init_is_pytorchs_or_the_reference_codes(demo):
    from methods._hyperx import HyperNetwork
    from methods.hyperx import HyperXConfig

    torch.manual_seed(0)
    assert HyperXConfig().projector_init == "pytorch"  # chosen by the figures in the README
    reference = HyperNetwork(["pos"], ["qaa"], 4, 128, HyperXConfig(projector_init="reference"))
    pytorch = HyperNetwork(["pos"], ["qaa"], 4, 128, HyperXConfig())
    for net, low, high in ((reference, 0.009, 0.011), (pytorch, 0.03, 1.0)):
        linears = [m for m in net.projector if isinstance(m, torch.nn.Linear)]
        assert all(low < float(m.weight.detach().std()) < high for m in linears)
        if net is reference:
            assert all(not m.bias.any() for m in linears)
    source = torch.randn(4, 3 * 64)
    assert reference.projector(source).abs().sum() < pytorch.projector(source).abs().sum()


def test_a_bad_methods_entry_is_one_line(tmp_path, capsys):
    assert main(["compare", "--methods", "adapter:mlm", "--output", str(tmp_path)]) == 2
    assert "expected METHOD or METHOD:KEY=VALUE" in capsys.readouterr().err
    assert main(["compare", "--methods", "adapter:nope=1", "--output", str(tmp_path)]) == 2
    assert "unknown option method.nope" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()
