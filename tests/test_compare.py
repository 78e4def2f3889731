"""`bench compare` runs a grid in fresh processes and tabulates it; `bench perf` times Hyper-X."""

import contextlib
import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bench import compare, perf, runner
from bench.cli import main
from bench.compare import Cell
from bench.request import parse_methods


def test_compare_writes_one_row_per_method_and_setting(tmp_path, capsys):
    report, out = tmp_path / "compare.md", tmp_path / "runs"
    args = ["compare", "--methods", "dummy", "--settings", "multi-task,mixed", "--seeds", "2"]
    args += ["--max-steps", "2", "--output", str(out), "--report", str(report)]
    assert main(args) == 0
    text, runs = report.read_text().split("Every run")
    assert "python -m bench compare --methods dummy --settings multi-task,mixed --seeds 2" in text
    summary = text.split("## Budgets")[0]
    rows = [line for line in summary.splitlines() if line.startswith("| `dummy`")]
    assert [row.split(" | ")[1] for row in rows] == ["multi-task", "mixed"]
    assert all("±" in row for row in rows)  # two seeds: mean ± sd
    each = [line.split(" | ") for line in runs.splitlines() if line.startswith("| `dummy`")]
    assert [(row[1], row[2]) for row in each] == [
        (s, i) for s in ("multi-task", "mixed") for i in "01"
    ]
    assert all(float(row[-1].strip(" |")) > 0 for row in each)  # each run's wall time
    for plot in ("compare-targets.png", "compare-pairs.png"):
        assert (tmp_path / plot).read_bytes()[:4] == b"\x89PNG" and f"]({plot})" in text
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("demo")
    assert len(client.search_runs([experiment.experiment_id])) == 4
    # a third seed with --reuse runs only that seed: the first two come from the store
    more = [*args[:6], "3", *args[7:], "--reuse"]
    assert main(more) == 0
    assert len(client.search_runs([experiment.experiment_id])) == 6
    assert report.read_text().split("## Budgets")[0].count("| `dummy`") == 2


def test_an_entrys_train_values_apply_to_its_runs_alone(tmp_path, capsys):
    """Methods tuned to different warmups run in one grid: `METHOD:train.KEY=VALUE`."""
    grid = {"suite": "demo", "output": tmp_path, "train": {"warmup_ratio": 0.1}, "plugins": ()}
    warm, plain = parse_methods("dummy:train.warmup_ratio=0.25,dummy")
    assert warm.label == "dummy [train.warmup_ratio=0.25]" and plain.train == {}
    ratios = [runner.resolve(compare._request(e, "mixed", 0, grid))[3].warmup_ratio
              for e in (warm, plain)]  # fmt: skip
    assert ratios == [0.25, 0.1]
    for bad, says in [("train.warmup=0.1", "unknown option train.warmup"),
                      ("train.max_steps=many", "train.max_steps")]:  # fmt: skip
        args = ["compare", "--methods", f"dummy:{bad}", "--output", str(tmp_path / "no")]
        assert main(args) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert says in line
    assert not (tmp_path / "no").exists()


def test_reuse_resumes_an_interrupted_grid_run_from_its_checkpoint(tmp_path, capsys):
    """A grid run stopped by Ctrl-C (KILLED, checkpointed) continues in the same MLflow run."""
    out = tmp_path / "runs"
    train = {"max_steps": 4, "eval_every": 2}
    grid = {"suite": "demo", "output": out, "train": train, "plugins": ()}
    (entry,) = parse_methods("dummy")

    def interrupt(score, last):
        raise KeyboardInterrupt  # at the first model selection, after 2 of 4 steps

    request = dataclasses.replace(compare._request(entry, "mixed", 0, grid), on_select=interrupt)
    with pytest.raises(KeyboardInterrupt):
        runner.execute(runner.prepare(request))
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("demo").experiment_id
    (stopped,) = client.search_runs([experiment])
    assert stopped.info.status == "KILLED"
    args = ["compare", "--methods", "dummy", "--settings", "mixed", "--seeds", "1"]
    args += ["--max-steps", "4", "--set", "train.eval_every=2", "--output", str(out), "--reuse"]
    assert main([*args, "--report", str(tmp_path / "compare.md")]) == 0
    assert f"resuming run {stopped.info.run_id}" in capsys.readouterr().out
    (run,) = client.search_runs([experiment])  # no new run: the same one, now finished
    assert run.info.run_id == stopped.info.run_id and run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "select/all/score")]
    assert steps[0] == 2 and steps[-1] == 4  # selected before the stop, and after the resume


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:  # the parent's pid
                found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the grid's run process in /proc")
def test_a_grid_run_stopped_by_sigterm_is_checkpointed_and_resumed_by_reuse(tmp_path):
    out = tmp_path / "runs"
    args = [sys.executable, "-m", "bench", "compare", "--methods", "dummy", "--seeds", "1"]
    args += ["--max-steps", "3000", "--set", "train.eval_every=5", "--output", str(out)]
    args += ["--report", str(tmp_path / "compare.md")]
    grid = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until the run has a checkpoint
        time.sleep(1)
        if (out / "mlflow.db").exists() and client.get_experiment_by_name("demo"):
            runs = client.search_runs([client.get_experiment_by_name("demo").experiment_id])
            if runs and "checkpoint" in runs[0].data.tags:
                break
    workers = [p for p in _children(grid.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline")
               .read_text(errors="replace")]  # fmt: skip
    assert workers, "no run process found"
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    _, err = grid.communicate(timeout=120)
    assert grid.returncode == 130 and "--reuse" in err, err[-2000:]
    (stopped,) = client.search_runs([client.get_experiment_by_name("demo").experiment_id])
    # checkpointed and KILLED, as `bench run` is: what --reuse resumes (the test above)
    assert stopped.info.status == "KILLED", stopped.data.tags
    assert "--resume" in stopped.data.tags["stopped"]


def test_learning_curves_run_the_grid_at_each_budget_and_plot_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default report: reports/<suite>/curves.md, plots beside it
    report, out = tmp_path / "reports" / "demo" / "curves.md", tmp_path / "runs"
    args = ["compare", "--methods", "dummy,dummy:lr=0.05", "--settings", "mixed", "--seeds", "2"]
    args += ["--budgets", "8,2", "--set", "train.eval_every=2", "--output", str(out)]
    assert main(args) == 0
    text = report.read_text()
    assert "--budgets 8,2" in text and "at 2 labelled budgets (2, 8 steps)" in text
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| `dummy")]
    # each method at each budget, ascending; the labelled steps are the budget's
    assert [(r[0], r[2], r[3]) for r in rows] == [
        ("| `dummy`", "2", "2"), ("| `dummy`", "8", "8"),
        ("| `dummy [lr=0.05]`", "2", "2"), ("| `dummy [lr=0.05]`", "8", "8"),
    ]  # fmt: skip
    assert all("±" in r[-1] for r in rows)  # two seeds: mean ± sd
    assert (report.parent / "curves-mixed.png").read_bytes()[:4] == b"\x89PNG"
    assert "](curves-mixed.png)" in text and "pos: majority" in text
    assert "Methods:" not in text  # `dummy` and `dummy [lr=0.05]`: the short names would meet
    reading = text.split("## Reading")[1]
    assert reading.count("- mixed, pos: `dummy") == 2 and "beats lookup" in reading
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("demo")
    assert len(client.search_runs([experiment.experiment_id])) == 8
    capsys.readouterr()
    for bad, why in (
        (["--budgets", "4"], "two or more"), (["--budgets", "4,x"], "integers"),
        (["--budgets", "2,4", "--max-steps", "3"], "give one"),
    ):  # fmt: skip
        assert main(["compare", "--methods", "dummy", "--output", str(out), *bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and why in err, err


def test_the_curves_reading_says_where_each_method_overtakes_the_others():
    from bench import curves

    def cell(method, *scores):  # one run per seed, its NER target score
        runs = tuple({"eval/ner/avg_target": s, "reference/majority/ner/avg_target": 0.0,
                      "reference/lookup/ner/avg_target": 30.0} for s in scores)  # fmt: skip
        return Cell(method, "mixed", runs, tuple(f"{method}{i}" for i in range(len(scores))))

    found = {
        100: [cell("a", 20, 22), cell("b", 10, 12), cell("c", 5, 7)],
        200: [cell("a", 35, 37), cell("b", 30, 32), cell("c", 8, 10)],
        400: [cell("a", 40, 42), cell("b", 40, 46), cell("c", 9, 11)],
    }
    lines = {line.split("`")[1]: line for line in curves._crossings(found, ["ner"])}
    assert lines["a"] == (
        "- mixed, ner: `a` beats lookup (30.0) from 200 steps; ahead of `c` at every budget; "
        "behind `b` (by less than the seeds' sd at 400 steps) at 400 steps"
    )
    assert "overtakes `a` (by less than the seeds' sd at 400 steps) from 400 steps" in lines["b"]
    assert lines["c"].endswith("at no budget up to 400; behind `a`, `b` at 400 steps")
    # a method that missed the largest budget is compared where both ran
    found[400] = found[400][:2]
    line = next(x for x in curves._crossings(found, ["ner"]) if "`c` beats" in x)
    assert line.endswith("at no budget up to 400; behind `a`, `b` at 200 steps")
    # a reference passed by less than the seeds' sd is marked so
    found[100][2] = cell("c", 29, 33)
    line = next(x for x in curves._crossings(found, ["ner"]) if "`c` beats" in x)
    assert "beats lookup (30.0) from 100 steps (by less than the seeds' sd there);" in line
    # a label with given values (`c [lr=0.1]`) reads short where the short names stay apart
    for cells in found.values():
        cells[-1] = dataclasses.replace(cells[-1], method="c [lr=0.1]")
    text = curves.render(found, suite="s", command="", plots=[])
    assert "Methods: `c` is `c [lr=0.1]`." in text and "| `c` | mixed | 100 |" in text
    assert "- mixed, ner: `c` beats" in text


def test_compare_refuses_an_unknown_method_before_running(tmp_path, capsys):
    args = ["compare", "--methods", "dummy,nope", "--output", str(tmp_path / "runs")]
    assert main(args) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "mlflow.db").exists()


def test_perf_times_hyperx_and_the_static_adapter_side_by_side():
    timing = perf.measure(perf.Case("demo", 2, 16, 8), repeats=1)
    for kind in ("train", "eval"):
        assert set(getattr(timing, kind)) == {"hyperx", "adapter"}
        assert math.isfinite(timing.ratio(kind)) and timing.ratio(kind) > 0
    assert set(timing.parts) == {"generation", "optimizer", "encoder, heads, backward"}
    text = perf.render([timing], command="python -m bench perf", threads=2, repeats=1)
    assert "| demo | 8 | 2 x 16 | train |" in text and "| demo | 8 | 2 x 16 | eval |" in text


def test_perf_runs_each_method_in_its_own_process_and_reports_the_cache():
    runs = perf.run_methods(["dummy", "dummy"], steps=20, threads=1)
    first, second = (r.metrics for r in runs)
    assert first["data/encoded"] > 0 and first["data/cached"] == 0  # a fresh folder
    assert second["data/encoded"] == 0 and second["data/cached"] == first["data/encoded"]
    assert all(0 < r.harness < 1 for r in runs)
    assert first["throughput/eval_tokens_per_s"] > 0
    text = perf.render_methods(runs, steps=20, threads=1)
    assert text.count("| `dummy` | 2,967 |") == 2
    assert f"the first run encoded {int(first['data/encoded'])} splits in" in text


def test_perf_times_each_method_on_a_shaped_backbone_in_its_own_process():
    case = perf.Case("demo", 2, 16, 0)
    figures = perf.shaped_steps(["lora", "hyperx-small"], repeats=1, threads=1, case=case)
    lora, hyperx = figures["lora"], figures["hyperx-small"]
    assert 0 < lora["trained"] < hyperx["trained"]
    for f in (lora, hyperx):
        assert f["train_min"] <= f["train_s"] <= f["train_max"]
        assert f["train_tokens_per_s"] == pytest.approx(2 * 16 / f["train_s"])
        assert f["peak_rss_mb"] > 100  # a process of its own: torch, transformers, the model
    text = perf.render_shaped(figures, repeats=1, threads=1)
    assert f"| `lora` | {int(lora['trained']):,} |" in text and "| `hyperx-small` |" in text


def test_perf_reports_the_data_parallel_speed_up_against_one_process():
    metrics = {"tokens/train": 1000, "time/train_s": 2.0, "memory/peak_rss_mb": 900}
    one = perf.MethodRun("hyperx-small", {**metrics, "throughput/tokens_per_s": 500})
    two = perf.MethodRun("hyperx-small", {**metrics, "throughput/tokens_per_s": 250})
    text = perf.render_data_parallel(one, two, steps=200, threads=2)
    assert "| 1 | 500 | 2.0 | 900 |" in text and "| 2 | 250 | 2.0 | 900 |" in text
    assert "Two processes reach 0.50 x the one process's throughput." in text


def test_perf_times_a_suites_preprocessing_encoded_then_cached():
    first, second = perf.preprocessing("demo", method="dummy")
    assert first["encoded"] > 0 and first["cached"] == 0
    assert second["encoded"] == 0 and second["cached"] == first["encoded"]
    assert first["examples"] == second["examples"] > 0
    text = perf.render_preprocessing("demo", [first, second])
    assert f"| first | {int(first['encoded'])} | 0 |" in text
    assert f"{first['data_s'] / second['data_s']:.1f} x faster" in text


def test_perf_refuses_an_unknown_preprocessing_suite_before_timing(capsys):
    assert main(["perf", "--preprocessing", "nope", "--methods", "none"]) == 2
    assert "unknown suite 'nope'" in capsys.readouterr().err


def test_the_reading_judges_a_lead_by_the_seeds_spread_not_by_a_single_model():
    def cell(name, *scores, averaged=False):
        runs = tuple({"eval/nli/avg_target": v} for v in scores)
        return Cell(name, "mixed", runs, ("id",) * len(scores), averaged=averaged)

    averages = [cell("a [run average]", 33.6, averaged=True), cell("b [run average]", 33.5)]
    (line,) = compare._reading(averages, ["nli"])
    assert line.endswith("(lead 0.1: one model each: no seeds' spread to judge it by)")
    (line,) = compare._reading([averages[0], cell("b", 33.0, 33.2, 33.4)], ["nli"])
    assert line.endswith("(lead 0.4: clear)")  # the seeds' sd of b, 0.2
    (line,) = compare._reading([averages[0], cell("b", 32.0, 33.2, 34.4)], ["nli"])
    assert line.endswith("(lead 0.4: within the seeds' spread)")
