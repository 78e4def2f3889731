"""`bench sweep`: Optuna studies of real runs, nested MLflow runs, resuming, several workers."""

import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from bench import runner, sweep
from bench.cli import main
from bench.errors import BenchError
from bench.tracking import hide_password

# a tiny budget: the dummy method on the demo suite's POS pairs, three selection evaluations
BUDGET = ["--method", "dummy", "--tasks", "pos", "--max-steps", "30", "--eval-every", "10",
          "--set", "train.eval_cap=200"]  # fmt: skip
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def _command(output, *extra):
    return [sys.executable, "-m", "bench", "sweep", *BUDGET, "--output", str(output), *extra]


def _study(output, name="demo-dummy-mixed", storage=None):
    url = storage or f"sqlite:///{output / 'optuna.db'}"
    return optuna.load_study(study_name=name, storage=sweep.open_storage(url, _uri(output)))


def _uri(output):
    return f"sqlite:///{output / 'mlflow.db'}"


def _runs(output, study):
    client = MlflowClient(_uri(output))
    experiment = client.get_experiment_by_name("demo")
    return client.search_runs([experiment.experiment_id], f"tags.`sweep.study` = '{study}'")


def _wait(condition, timeout=300):
    """Polls `condition` while a sweep process creates its stores (reading them may fail)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            if condition():
                return
        except Exception:
            pass
    raise AssertionError("the sweep did not get there in time")


def _check_recorded_once(output, study, storage=None):
    """Every trial in a terminal state with exactly one MLflow run nested under the parent."""
    found = _study(output, study, storage)
    runs = _runs(output, study)
    parent = found.user_attrs["mlflow.parent_run_id"]
    trials = [r for r in runs if r.info.run_id != parent]
    numbers = [int(r.data.tags["sweep.trial"]) for r in trials]
    states = [  # what a failure shows: each trial's state, error and what it retried
        (t.number, t.state.name, t.user_attrs.get("error"), t.system_attrs.get("failed_trial"))
        for t in found.trials
    ]
    assert sorted(numbers) == [t.number for t in found.trials], states  # one run per trial
    assert all(r.data.tags["mlflow.parentRunId"] == parent for r in trials)
    assert all(t.state in (*DONE, TrialState.FAIL) for t in found.trials)
    assert all(r.info.status != "RUNNING" for r in runs)
    return found, {int(r.data.tags["sweep.trial"]): r for r in trials}, runs


@pytest.mark.slow
def test_a_sweep_prunes_stops_resumes_and_nests_its_runs(tmp_path):
    output = tmp_path / "runs"
    hanging = tmp_path / "hanging"
    process = _hanging(
        hanging, 2, _command(output, "--trials", "6"), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    _wait(hanging.exists)  # in its third trial
    assert [t.state for t in _study(output).trials] == [
        *[TrialState.COMPLETE] * 2,
        TrialState.RUNNING,
    ]
    assert len(_runs(output, "demo-dummy-mixed")) == 4  # the parent and 3 trials
    # stopped in its third trial by SIGTERM, handled as Ctrl-C is (SIGINT would not do here: a
    # shell ignores it in the jobs it starts in the background, and so do their children)
    os.killpg(process.pid, signal.SIGTERM)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 130, out
    assert "run the same command to resume" in out
    stopped = _study(output)
    assert [t.state for t in stopped.trials] == [*[TrialState.COMPLETE] * 2, TrialState.FAIL]
    assert stopped.trials[2].user_attrs["error"].startswith("KeyboardInterrupt")
    client = MlflowClient(_uri(output))
    parent = stopped.user_attrs["mlflow.parent_run_id"]
    assert client.get_run(parent).info.status == "KILLED"

    resumed = subprocess.run(_command(output, "--trials", "6"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    found, trial_runs, _ = _check_recorded_once(output, "demo-dummy-mixed")
    states = [t.state for t in found.trials]
    assert sum(s in DONE for s in states) == 6 and states.count(TrialState.FAIL) == 1
    assert trial_runs[2].info.status == "KILLED"  # the interrupted one, not left RUNNING
    pruned = [t for t in found.trials if t.state is TrialState.PRUNED]
    assert pruned, "the median rule pruned no trial"
    for t in pruned:  # stopped at a selection evaluation: never evaluated on test
        run = trial_runs[t.number]
        assert run.info.status == "KILLED" and run.data.tags["stopped"].startswith("pruned")
        assert not any(k.startswith("eval/") for k in run.data.metrics)
    best = found.best_trial
    run = trial_runs[best.number]
    assert run.data.metrics["select/score"] == pytest.approx(best.value)  # selection, not targets
    assert float(run.data.params["method.lr"]) == pytest.approx(best.params["method.lr"])
    tags = client.get_run(parent).data.tags
    assert client.get_run(parent).info.status == "FINISHED"
    assert tags["best.trial"] == str(best.number) and tags["best.run_id"] == run.info.run_id
    assert float(tags["best.method.lr"]) == pytest.approx(best.params["method.lr"])
    assert f"best: trial {best.number}" in resumed.stdout
    # between trials: each one's values when it starts, and its end with the study's count
    assert "trial 3 started: method.lr=" in resumed.stdout
    ended = re.findall(
        r"trial (\d+) (complete|pruned) \d+\.\d\d; (\d) of 6 finished, best", resumed.stdout
    )
    assert [int(done) for _, _, done in ended] == list(range(3, 7)), resumed.stdout
    assert any(state == "pruned" for _, state, _ in ended)
    # a folder holding only a sweep: report says its runs are tuning runs, and what to run
    report = subprocess.run([sys.executable, "-m", "bench", "report", "--output", str(output)],
                            capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert report.returncode == 2
    assert ": it holds only tuning runs (" in report.stderr and "reports leave out" in report.stderr
    assert report.stderr.rstrip().endswith("settings with finished runs that reports count: none")


@pytest.mark.slow
def test_two_workers_share_a_sqlite_study(tmp_path):
    output = tmp_path / "runs"
    done = subprocess.run(
        _command(output, "--trials", "4", "--workers", "2", "--no-prune"),
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found, trial_runs, _ = _check_recorded_once(output, "demo-dummy-mixed")
    finished = [t for t in found.trials if t.state is TrialState.COMPLETE]
    assert 4 <= len(finished) <= 5  # a trial running when the 4th finished finishes too
    assert all(trial_runs[t.number].info.status == "FINISHED" for t in finished)


def _postgres_url():
    url = os.environ.get("BENCH_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("BENCH_TEST_POSTGRES_URL is not set (.ci/run starts PostgreSQL and sets it)")
    try:
        sweep.open_storage(url, "sqlite://").engine.connect().close()
    except Exception as error:
        pytest.skip(f"PostgreSQL at {hide_password(url)} cannot be reached: {error}")
    return url


def _check_output_often(output):
    for _ in range(300):
        runner._check_output(output)


def test_workers_checking_one_output_at_once_do_not_trip_each_other(tmp_path):
    """Each worker's `runner.prepare` checks that the output folder is writable: with one probe
    file for all, one worker removed the other's and failed a trial before its MLflow run."""
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_check_output_often, [tmp_path, tmp_path])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study(tmp_path):
    url = _postgres_url()
    name = f"test-{uuid.uuid4().hex[:8]}"
    output = tmp_path / "runs"
    try:
        done = subprocess.run(
            _command(output, "--trials", "4", "--workers", "2", "--storage", url, "--study", name),
            capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        found, _, _ = _check_recorded_once(output, name, url)
        assert sum(t.state in DONE for t in found.trials) >= 4
    finally:
        optuna.delete_study(study_name=name, storage=sweep.open_storage(url, _uri(output)))


# A sweep whose trial N hangs at its first selection evaluation (inside the trial's MLflow run) and
# touches a file to say so, so that a test stops it there and nowhere else: a trial of the tiny
# budget takes under a second, too short to catch by polling.
HANGING = """
import dataclasses, pathlib, sys, time
from bench import runner
from bench.cli import main

flag, number = pathlib.Path(sys.argv[1]), sys.argv[2]

def hang(score, last):
    flag.touch()
    time.sleep(3600)

def prepare(request, real=runner.prepare):
    if request.tags.get("sweep.trial") == number:
        request = dataclasses.replace(request, on_select=hang)
    return real(request)

runner.prepare = prepare
sys.exit(main(sys.argv[3:]))
"""


def _hanging(flag, trial, command, **popen):
    """`command` (a `bench sweep`) in a process whose trial `trial` hangs once `flag` exists."""
    script = [sys.executable, "-c", HANGING, str(flag), str(trial), *command[3:]]
    return subprocess.Popen(script, **popen)


def test_a_dead_workers_trial_is_failed_retried_and_its_run_ended(tmp_path, monkeypatch):
    output = tmp_path / "runs"
    hanging = tmp_path / "hanging"
    process = _hanging(hanging, 0, _command(output, "--trials", "2"),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    _wait(hanging.exists)  # in its first trial
    process.kill()
    process.wait()
    monkeypatch.setattr(sweep, "GRACE_S", 1)  # this worker sees the dead one's heartbeat as stale
    time.sleep(1.5)
    train = {"max_steps": 30, "eval_every": 10, "eval_cap": 200}
    request = runner.Request("dummy", output=output, tasks=("pos",), train=train, progress=False)
    spec = sweep.prepare(request, trials=2, study=None, storage=None, space={}, prune=True)
    sweep.run(spec, 1)
    rows = sweep.finish(spec)
    found, trial_runs, _ = _check_recorded_once(output, "demo-dummy-mixed")
    assert found.trials[0].state is TrialState.FAIL
    assert trial_runs[0].info.status == "KILLED"
    assert "no heartbeat" in trial_runs[0].data.tags["error"]
    retry = found.trials[1]
    assert retry.params == found.trials[0].params  # the same values, tried again
    assert rows[1].note == "retry of trial 0"


def test_search_spaces_parse_and_are_checked_against_the_options():
    space = sweep.parse_space(
        ["method.lr=float:1e-4:1e-2:log", "train.max_length=int:32:64", "method.mlm=choice:0,1"]
    )
    assert space == {
        "method.lr": FloatDistribution(1e-4, 1e-2, log=True),
        "train.max_length": IntDistribution(32, 64),
        "method.mlm": CategoricalDistribution([0, 1]),
    }
    request = runner.Request("hyperx", method_options={"lr": 1e-3})
    checked = sweep.search_space(request, {"train.max_length": IntDistribution(32, 64)})
    assert "method.lr" not in checked  # fixed by --set / --lr
    assert {"method.bottleneck", "method.source_dim", "train.max_length"} <= set(checked)
    assert sweep.describe(FloatDistribution(1e-5, 1e-2, log=True)) == "float:1e-05:0.01:log"


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("method.lr=float:1e-3", "--space 'method.lr=float:1e-3' is invalid"),
        ("method.lr=float:1e-2:1e-3", "is invalid"),  # LOW > HIGH
        ("method.lr=uniform:0:1", "is invalid"),
        ("method.rank=int:4:16", "'method.rank' is not an option of dummy"),
        ("method.lr=float:-1:1", "method.lr=-1.0 is invalid: must be > 0"),
    ],
)
def test_bad_search_spaces_stop_before_any_trial(tmp_path, capsys, space, message):
    output = tmp_path / "runs"
    code = main(["sweep", *BUDGET, "--output", str(output), "--space", space])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err
    assert not (output / "optuna.db").exists() and not (output / "mlflow.db").exists()


def test_a_study_cannot_resume_with_another_space_and_storage_errors_are_one_line(tmp_path, capsys):
    output = tmp_path / "runs"
    request = runner.Request("dummy", output=output, tasks=("pos",), train={"max_steps": 30})
    sweep.prepare(request, trials=1, study="s", storage=None, space={}, prune=True)
    with pytest.raises(BenchError, match=r"study 's' .* \(space.method.lr: float:1e-05:0.01:log"):
        narrow = {"method.lr": FloatDistribution(1e-4, 1e-3, log=True)}
        sweep.prepare(request, trials=1, study="s", storage=None, space=narrow, prune=True)
    bad = "postgresql://bench:secret@127.0.0.1:1/none"
    code = main(["sweep", *BUDGET, "--output", str(output), "--storage", bad, "--study", "t"])
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]  # after MLflow's log lines of the first prepare
    assert code == 2 and last.startswith("error: Optuna storage postgresql+psycopg://bench:***@")
    assert "secret" not in err
    client = MlflowClient(_uri(output))
    assert len(client.search_runs([client.get_experiment_by_name("demo").experiment_id])) == 1


def test_a_best_value_at_an_edge_of_its_searched_range_is_named(tmp_path):
    space = {
        "method.lr": FloatDistribution(1e-5, 1e-2, log=True),
        "method.bottleneck": IntDistribution(16, 256, log=True),
        "train.warmup_ratio": FloatDistribution(0.0, 0.2),
        "method.mlm": CategoricalDistribution([True, False]),
    }
    inside = {"method.lr": 3e-4, "method.bottleneck": 64, "train.warmup_ratio": 0.1}
    assert sweep.at_edge(space, {**inside, "method.mlm": True}) == []
    edges = {"method.lr": 0.00992, "method.bottleneck": 16, "train.warmup_ratio": 0.1}
    assert sweep.at_edge(space, edges) == [
        "method.bottleneck=16 at the low end of int:16:256:log",
        "method.lr=0.00992 at the high end of float:1e-05:0.01:log",
    ]
    spec = sweep.Sweep(runner.Request("dummy", output=tmp_path), "s", "sqlite://", 2, space,
                       True, "", "")  # fmt: skip
    rows = [
        sweep.Row(0, "COMPLETE", 50.0, {**edges, "method.mlm": True}, "", 1.0, ""),
        sweep.Row(1, "COMPLETE", 40.0, {**inside, "method.mlm": True}, "", 1.0, ""),
    ]
    last = sweep.render(spec, rows).splitlines()[-1]
    assert (
        last.startswith("warning: method.bottleneck=16 at the low end") and "widen --space" in last
    )


def test_compare_marks_a_tuned_value_at_an_edge():
    from bench.compare import Tuned, _tuning

    edge = "method.lr=0.00992 at the high end of float:1e-05:0.01:log"
    tuned = {
        "hyperx": Tuned("t-h", "sqlite://", "mixed", 3, 3, 0, 1, 84.0, {"method.lr": 0.00992},
                        (edge,)),
        "adapter": Tuned("t-a", "sqlite://", "mixed", 3, 2, 1, 0, 83.0, {"method.lr": 3e-4}),
    }  # fmt: skip
    lines = _tuning(tuned)
    assert next(x for x in lines if "`hyperx`" in x).endswith("`method.lr`=0.00992 † |")
    assert next(x for x in lines if "`adapter`" in x).endswith("`method.lr`=0.0003 |")
    assert f"† `hyperx`: {edge}; the best may lie beyond it." in "\n".join(lines)


@pytest.mark.slow
def test_a_journal_file_holds_a_study_without_a_database(tmp_path):
    """`--storage journal:PATH`: Optuna's journal file, for a shared filesystem."""
    output, journal = tmp_path / "runs", tmp_path / "study.log"
    done = subprocess.run(_command(output, "--trials", "2", "--storage", f"journal:{journal}"),
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = _study(output, storage=f"journal:{journal}")
    assert sum(t.state in DONE for t in found.trials) == 2 and journal.stat().st_size > 0
