"""End to end: a real run of the runner, logged to a real MLflow sqlite store, read back."""

import json
import re
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from bench import evaluation, runner, tracking
from bench.cli import main

TINY = {"max_steps": 30, "eval_every": 15, "batch_size": 16, "mlm_cap": 200}


def tiny_run(tmp_path, method="dummy", setting="mixed", seed=0, **extra):
    request = runner.Request(
        method=method, setting=setting, seed=seed, output=tmp_path, progress=False,
        train={**TINY, **extra.pop("train", {})}, **extra,
    )  # fmt: skip
    return runner.execute(runner.prepare(request))


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    code = main(
        ["run", "--method", "dummy", "--setting", "mixed", "--output", str(out), "--no-progress"]
        + [f"--set=train.{k}={v}" for k, v in TINY.items()]
    )
    assert code == 0
    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["demo"], output_format="list")
    assert len(runs) == 1
    return runs[0]


def test_run_logs_params_tags_and_status(logged):
    assert logged.info.status == "FINISHED"
    params = logged.data.params
    assert (
        params["method"] == "dummy" and params["setting"] == "mixed" and params["suite"] == "demo"
    )
    assert params["train.max_steps"] == "30" and params["method.lr"] == "0.0005"
    assert logged.data.tags["method"] == "dummy"
    assert "git.commit" in logged.data.tags


def test_run_logs_a_metric_per_eval_pair_and_resources(logged, demo):
    metrics = logged.data.metrics
    for task in demo.labelled_tasks:
        metric = "f1" if task == "ner" else "accuracy"
        for language in demo.languages:
            assert f"eval/{task}/{language}/{metric}" in metrics
            assert f"reference/majority/{task}/{language}/{metric}" in metrics
        assert f"eval/{task}/avg_target" in metrics
    assert metrics["params/trainable"] > 0
    assert metrics["params/total"] > metrics["params/trainable"]
    for name in ("memory/peak_rss_mb", "time/train_s", "time/eval_s", "throughput/tokens_per_s"):
        assert metrics[name] > 0
    assert "train/all/loss" in metrics and "select/all/score" in metrics


def test_results_artifact_holds_predictions_and_gold(logged, demo):
    path = mlflow.artifacts.download_artifacts(
        run_id=logged.info.run_id, artifact_path="results.json"
    )
    results = json.loads(Path(path).read_text())
    assert results["run_id"] == logged.info.run_id
    pairs = {(p["task"], p["language"]): p for p in results["pairs"]}
    assert len(pairs) == len(demo.labelled_tasks) * len(demo.languages)
    pos = pairs[("pos", demo.targets[0])]
    assert len(pos["predictions"]) == len(pos["gold"]) == 500
    assert all(len(p) == len(g) for p, g in zip(pos["predictions"], pos["gold"], strict=True))
    nli = pairs[("nli", demo.main_source)]
    assert set(nli["predictions"]) <= set(demo.task("nli").labels)
    for name in ("config.json", "plan.json"):
        mlflow.artifacts.download_artifacts(run_id=logged.info.run_id, artifact_path=name)


def test_same_seed_gives_identical_metrics(tmp_path):
    short = {"max_steps": 12, "eval_every": 6, "eval_cap": 100}
    first = tiny_run(tmp_path / "a", method="full-ft", train=short)
    second = tiny_run(tmp_path / "b", method="full-ft", train=short)
    other = tiny_run(tmp_path / "c", method="full-ft", seed=1, train=short)
    scores = {k: v for k, v in first.metrics.items() if k.startswith(("eval/", "reference/"))}
    assert scores == {k: second.metrics[k] for k in scores}
    assert scores != {k: other.metrics[k] for k in scores}


@pytest.mark.parametrize("setting", ["single-task", "multi-task", "few-shot"])
def test_every_setting_runs(tmp_path, setting):
    shots = {"shots": 4} if setting == "few-shot" else {}
    result = tiny_run(tmp_path, setting=setting, train={**shots, "eval_cap": 50})
    roles = {r.role for r in result.pairs}
    assert roles == {"source", "target"}


def test_mlm_pairs_train_when_the_method_uses_them(tmp_path):
    short = {"max_steps": 6, "eval_every": 6, "eval_cap": 20}
    result = tiny_run(tmp_path, method="full-ft", method_options={"mlm": True}, train=short)
    assert result.metrics["budget/mlm_steps"] > 0
    assert result.metrics["params/trainable"] == result.metrics["params/total"]


def test_select_cap_cuts_the_model_selection_pairs_and_eval_cap_the_rest(tmp_path):
    request = runner.Request(
        method="dummy", output=tmp_path, train={"eval_cap": 9, "select_cap": 4}
    )
    prepared = runner.prepare(request)
    (model,) = prepared.plan.models
    assert {len(prepared.data[runner.data_key(e)].rows) for e in model.selection} == {4}
    assert {len(prepared.data[runner.data_key(e)].rows) for e in model.eval} == {9}


def test_eval_cap_evaluates_the_first_examples_of_each_pair(tmp_path, demo):
    result = tiny_run(tmp_path, train={"eval_cap": 7})
    assert {len(r.gold) for r in result.pairs} == {7}
    full = demo.task("pos").load("qad", "test")
    (qad,) = [r for r in result.pairs if (r.task, r.language) == ("pos", "qad")]
    assert len(full) > 7 and len(qad.gold[0]) == len(full[0]["tags"])  # the split's first ones


@pytest.mark.slow
def test_bf16_against_fp32_is_timed_and_predicts_the_same_labels(tmp_path, capsys):
    """`bench perf --precision` times both precisions on one model and counts how often they
    predict the same label on every test set of the demo suite, read whole."""
    report = tmp_path / "precision.md"
    args = ["perf", "--precision", "demo", "--methods", "adapter", "--precision-steps", "2"]
    assert main([*args, "--report", str(report)]) == 0
    text = report.read_text()
    assert "| every test set whole (21 pairs, 10,500 examples," in text
    words = re.search(r"in both precisions for ([\d.]+)% of ([\d,]+) words", text)
    assert float(words[1]) > 95 and int(words[2].replace(",", "")) > 50_000
    assert "examples of" in text and "fp32 / bf16" in text
    capsys.readouterr()
    assert main([*args[:4], "adapter,lora"]) == 2
    assert "--precision times one method" in capsys.readouterr().err


def test_bf16_autocast_is_a_logged_setting_that_changes_the_computation(
    logged, tmp_path, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # reading `logged` back set it
    code = main(
        ["run", "--method", "dummy", "--output", str(tmp_path), "--no-progress"]
        + [f"--set=train.{k}={v}" for k, v in TINY.items()]
        + ["--precision", "bf16"]
    )
    assert code == 0
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = mlflow.search_runs(experiment_names=["demo"], output_format="list")
    assert logged.data.params["train.precision"] == "fp32"
    assert run.data.params["train.precision"] == "bf16"
    loss, reference = run.data.metrics["train/all/loss"], logged.data.metrics["train/all/loss"]
    assert loss != reference and loss == pytest.approx(reference, rel=0.05)
    # on a CPU without bfloat16 instructions, bf16 is emulated: the run says so, and goes on
    emulated = evaluation.cpu_flags() == "none"
    assert ("warning.slow_bf16" in run.data.tags) == emulated
    assert ("warning.slow_bf16" in logged.data.tags) is False


def test_bf16_on_a_cpu_without_bfloat16_instructions_is_named_slow(monkeypatch):
    cpu = torch.device("cpu")
    for flags, precision, says in [("none", "bf16", True), ("avx512_bf16", "bf16", False),
                                   ("none", "fp32", False)]:  # fmt: skip
        monkeypatch.setattr(runner, "cpu_flags", lambda flags=flags: flags)
        line = runner.emulated_bf16(precision, cpu)
        assert bool(line) == says
        assert not line or ("avx512_bf16" in line and "train.precision=fp32" in line)
    assert runner.emulated_bf16("bf16", torch.device("meta")) == ""  # not a CPU: not ours to say


def test_a_new_store_is_a_copy_of_an_empty_one_mlflow_made(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "TEMPLATES", tmp_path / "cache")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # set by `logged` reading its run
    first, second = tmp_path / "a" / "mlflow.db", tmp_path / "b" / "mlflow.db"
    for path in (first, second):
        path.parent.mkdir()
        tracking.seed_store(f"sqlite:///{path}")
    (template,) = (tmp_path / "cache").glob("mlflow-*-empty.db")
    assert first.read_bytes() == second.read_bytes() == template.read_bytes()
    client = MlflowClient(f"sqlite:///{second}")
    # opened by MLflow: its Default experiment, with the artifact folder MLflow gives it here
    (default,) = client.search_experiments()
    assert default.name == "Default" and "cache" not in default.artifact_location
    before = second.read_bytes()
    tracking.seed_store(f"sqlite:///{second}")  # a store that is there is left alone
    assert second.read_bytes() == before
    tracking.seed_store(f"sqlite:///{tmp_path / 'missing' / 'mlflow.db'}")
    assert not (tmp_path / "missing").exists()
    result = tiny_run(tmp_path / "b", train={"max_steps": 2, "eval_every": 2})
    assert client.get_run(result.run_id).info.status == "FINISHED"
