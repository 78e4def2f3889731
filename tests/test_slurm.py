"""Grids and sweeps on a cluster: a real one-node Slurm (`.ci/run` starts it), submitit, an MLflow
server on PostgreSQL; and the cluster input refused before anything is submitted."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import optuna
import pytest
from mlflow.tracking import MlflowClient
from test_formats import conllu
from test_suitefile import two_language_files, two_language_suite

from bench import sweep, ui
from bench.cli import main
from bench.launch import JOB_TAG

SLURM = (
    shutil.which("sbatch") is not None
    and subprocess.run(["sinfo", "-h"], capture_output=True, check=False).returncode == 0
)
needs_slurm = pytest.mark.skipif(
    not SLURM, reason="no Slurm cluster answers here (.ci/run starts a one-node one)"
)
TINY = ["--set", "train.eval_every=20", "--set", "train.eval_cap=50"]


@pytest.fixture()
def cluster_suite(tmp_path):
    """A suite file of its own name (so, its own MLflow experiment in a shared store) over small
    files of distinct sentences: POS in English and German, NER in German."""
    data = tmp_path / "data"
    two_language_files(data, "en", en_count=20, de_count=40)
    (data / "de-test.conllu").write_text(conllu("detest", 20))
    path = tmp_path / f"cluster-{uuid.uuid4().hex[:8]}.toml"
    path.write_text(
        two_language_suite(data, {"test": "de-test.conllu"}, text=False)
        + """
[settings.mixed]
train = ["pos/en", "ner/de"]
[settings.multi-task]
train = ["pos/en"]
"""
    )
    return path


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on PostgreSQL (BENCH_TEST_MLFLOW_DB), its artifacts in a folder."""
    database = os.environ.get("BENCH_TEST_MLFLOW_DB")
    if not database:
        pytest.skip("BENCH_TEST_MLFLOW_DB is not set (.ci/run creates it in PostgreSQL)")
    folder = tmp_path_factory.mktemp("server")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (folder / "server.log").open("w")
    process = subprocess.Popen(
        ui.server_command(database, folder, "127.0.0.1", port), env=ui.server_env(),
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, (folder / "server.log").read_text()[-2000:]
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2):
                break
        except OSError:
            assert time.monotonic() < deadline, "the MLflow server did not start"
            time.sleep(0.5)
    yield base
    process.terminate()
    process.wait(30)


def _runs(uri, suite):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(suite.stem)
    return client, client.search_runs([experiment.experiment_id]) if experiment else []


@needs_slurm
@pytest.mark.slow
def test_a_grid_runs_as_slurm_jobs_into_an_mlflow_server(cluster_suite, mlflow_server, tmp_path):
    report = tmp_path / "grid.md"
    args = ["compare", "--methods", "dummy", "--settings", "multi-task,mixed", "--seeds", "2"]
    args += ["--suite", str(cluster_suite), "--max-steps", "40", *TINY, "--launcher", "slurm"]
    args += ["--slurm", "cpus_per_task=1", "--tracking-uri", mlflow_server]
    args += ["--output", str(tmp_path / "runs"), "--report", str(report)]
    done = subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "slurm: submitted 4 jobs" in done.stdout
    assert "slurm: 0 pending, 0 running, 4 done, 0 failed (of 4)" in done.stdout
    _, runs = _runs(mlflow_server, cluster_suite)
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 4
    assert all(r.data.tags[JOB_TAG] for r in runs)  # each ran in a job, tagged with its id
    text = report.read_text()
    assert "| `dummy` † | multi-task |" in text or "| `dummy` | multi-task |" in text
    assert "--launcher slurm --slurm cpus_per_task=1" in text


@needs_slurm
@pytest.mark.slow
def test_a_requeued_job_continues_its_run_to_the_same_metrics(cluster_suite, tmp_path):
    uri = f"sqlite:///{tmp_path / 'local' / 'mlflow.db'}"  # the uninterrupted run, here
    server = os.environ.get("BENCH_TEST_MLFLOW_DB")
    if not server:
        pytest.skip("BENCH_TEST_MLFLOW_DB is not set (.ci/run creates it in PostgreSQL)")
    budget = ["--max-steps", "600", "--set", "train.eval_every=20", "--set", "train.eval_cap=50"]
    grid = ["compare", "--methods", "dummy", "--seeds", "1", "--suite", str(cluster_suite)]
    grid += [*budget, "--launcher", "slurm", "--tracking-uri", server]
    grid += ["--output", str(tmp_path / "runs"), "--report", str(tmp_path / "grid.md")]
    process = subprocess.Popen([sys.executable, "-m", "bench", *grid], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while True:  # the run has written a checkpoint: requeue its job mid-run
        assert process.poll() is None, process.communicate()
        _, runs = _runs(server, cluster_suite)
        if runs and "checkpoint" in runs[0].data.tags:
            break
        assert time.monotonic() < deadline, "the job's run wrote no checkpoint in time"
        time.sleep(0.5)
    job = runs[0].data.tags[JOB_TAG]
    subprocess.run(["scontrol", "requeue", job], check=True)
    time.sleep(2)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    _, (run,) = _runs(server, cluster_suite)
    assert run.info.status == "FINISHED" and run.data.tags["resumed"].startswith("from model")
    assert run.data.tags[JOB_TAG] == job
    local = ["run", "--method", "dummy", "--suite", str(cluster_suite), "--no-progress", *budget]
    assert main([*local, "--output", str(tmp_path / "local")]) == 0
    _, (alone,) = _runs(uri, cluster_suite)
    scores = [k for k in alone.data.metrics if k.startswith(("eval/", "select/", "budget/"))]
    assert {k: run.data.metrics[k] for k in scores} == {k: alone.data.metrics[k] for k in scores}


@needs_slurm
@pytest.mark.slow
def test_a_sweep_runs_its_workers_as_slurm_jobs_on_a_postgresql_study(tmp_path, mlflow_server):
    storage = os.environ.get("BENCH_TEST_SLURM_STUDY_DB")
    if not storage:
        pytest.skip("BENCH_TEST_SLURM_STUDY_DB is not set (.ci/run creates it in PostgreSQL)")
    name = f"slurm-{uuid.uuid4().hex[:8]}"
    args = ["sweep", "--method", "dummy", "--trials", "4", "--workers", "2", "--max-steps", "20"]
    args += ["--eval-every", "10", "--set", "train.eval_cap=50", "--study", name]
    args += ["--storage", storage, "--tracking-uri", mlflow_server, "--launcher", "slurm"]
    args += ["--output", str(tmp_path / "runs")]
    try:
        done = subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True,
                              text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert "slurm: submitted 2 jobs" in done.stdout
        study = optuna.load_study(study_name=name, storage=sweep.open_storage(storage, "x"))
        finished = [t for t in study.trials if t.state.is_finished()]
        assert len(finished) >= 4 and all(t.state.name != "FAIL" for t in finished)
    finally:
        optuna.delete_study(study_name=name, storage=sweep.open_storage(storage, "x"))


@needs_slurm
def test_ctrl_c_cancels_the_jobs_and_says_how_to_continue(cluster_suite, tmp_path):
    server = os.environ.get("BENCH_TEST_MLFLOW_DB")
    if not server:
        pytest.skip("BENCH_TEST_MLFLOW_DB is not set (.ci/run creates it in PostgreSQL)")
    grid = ["compare", "--methods", "dummy", "--seeds", "2", "--suite", str(cluster_suite)]
    grid += ["--max-steps", "5000", *TINY, "--launcher", "slurm", "--tracking-uri", server]
    grid += ["--output", str(tmp_path / "runs")]
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", *grid], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    line = ""
    while "slurm: submitted" not in line:
        line = process.stdout.readline()
        assert line or process.poll() is None, process.communicate()
    jobs = line.split("(")[1].split(")")[0].split("..")
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode != 0
    assert "slurm: cancelled 2 jobs" in err and "--reuse" in err.splitlines()[-1]
    queue = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
    assert not set(jobs) & set(queue.split())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--slurm", "partitio=gpu"], "--slurm partitio=gpu: unknown key 'partitio'; valid: "),
        ([], "cannot share the sqlite store sqlite:///"),
        (["--tracking-uri", "http://127.0.0.1:9"], "needs Slurm's commands, and sbatch"),
        (["--slurm", "cpus_per_task=many"], "--slurm cpus_per_task=many: not a int"),
    ],
)
def test_bad_cluster_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here, so nothing can be submitted
    args = ["compare", "--methods", "dummy", "--launcher", "slurm", *extra]
    assert main([*args, "--output", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "runs").exists()


def test_a_sweep_on_slurm_refuses_a_sqlite_study(tmp_path, capsys):
    args = ["sweep", "--method", "dummy", "--launcher", "slurm", "--tracking-uri", "http://x:5000"]
    assert main([*args, "--output", str(tmp_path / "runs")]) == 2
    assert "cannot share the sqlite study storage sqlite:///" in capsys.readouterr().err


def test_slurm_options_need_the_slurm_launcher_and_parallel_the_local_one(tmp_path, capsys):
    out = ["--output", str(tmp_path / "runs")]
    assert main(["compare", "--methods", "dummy", "--slurm", "partition=gpu", *out]) == 2
    assert "add --launcher slurm" in capsys.readouterr().err
    assert main(["compare", "--methods", "dummy", "--parallel", "0", *out]) == 2
    assert "--parallel 0 is invalid" in capsys.readouterr().err


@pytest.mark.slow
def test_parallel_local_runs_finish_side_by_side(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # its report goes under ./reports
    out = tmp_path / "runs"
    args = ["compare", "--methods", "dummy", "--seeds", "2", "--max-steps", "4", "--parallel", "2"]
    assert main([*args, "--set", "train.eval_every=2", "--output", str(out)]) == 0
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("demo").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    starts = sorted(r.info.start_time for r in runs)
    ends = sorted(r.info.end_time for r in runs)
    assert starts[1] < ends[0]  # the second started before the first ended
