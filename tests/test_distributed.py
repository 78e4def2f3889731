"""Data-parallel training: `bench run --processes 2` on two CPU processes (gloo), through
accelerate's launcher, interrupted and resumed, against the same run in one process."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from bench.cli import main
from bench.distributed import Group

ROOT = Path(__file__).resolve().parent.parent
# Hyper-X small: each step trains one task's head and leaves the others' unused, which DDP must
# allow. Batches of 9 do not split evenly over 2 processes; the weighting makes up for it.
FLAGS = ["--method", "hyperx-small", "--max-steps", "60", "--eval-every", "20", "--no-progress",
         "--set", "train.batch_size=9", "--set", "train.eval_cap=40"]  # fmt: skip


def test_a_batch_is_shared_out_so_that_the_weighted_losses_average_to_the_batchs():
    indices = [10, 11, 12, 13, 14]
    shares = [Group(rank, 2, torch.device("cpu")).shard(indices) for rank in (0, 1)]
    assert shares == [([10, 12, 14], 2 * 3 / 5), ([11, 13], 2 * 2 / 5)]
    assert sorted(i for share, _ in shares for i in share) == indices
    assert sum(weight for _, weight in shares) / 2 == pytest.approx(1.0)
    # fewer examples than processes: the one left over runs an example at weight 0
    assert Group(1, 2, torch.device("cpu")).shard([7]) == ([7], 0.0)
    assert Group(0, 1, torch.device("cpu")).shard(indices) == (indices, 1.0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run in two processes (launched, Ctrl-C'd after its first checkpoint, resumed)
    and in one; their MLflow runs by processes, and what the two-process attempts printed."""
    output = tmp_path_factory.mktemp("ddp")
    command = [sys.executable, "-m", "bench", "run", *FLAGS, "--processes", "2", "--output"]
    first = subprocess.Popen(
        [*command, str(output)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not list(output.glob("checkpoints/*/resume/latest")):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
    interrupted = first.communicate(timeout=300)[1]
    assert first.returncode == 130, interrupted[-3000:]
    (run_id,) = re.findall(r"interrupted: run (\w+) is KILLED", interrupted)
    resumed = subprocess.run(
        [*command, str(output), "--resume", run_id], cwd=ROOT, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert main(["run", *FLAGS, "--output", str(output)]) == 0
    client = MlflowClient(f"sqlite:///{output / 'mlflow.db'}")
    found = client.search_runs(client.get_experiment_by_name("demo").experiment_id)
    by_processes = {run.data.tags["processes"]: run for run in found}
    return client, by_processes, interrupted, resumed.stdout, output


def test_two_processes_make_one_mlflow_run_that_process_0_reports(runs):
    client, by_processes, interrupted, stdout, output = runs
    assert sorted(by_processes) == ["1", "2"]  # the second process logged no run of its own
    run = by_processes["2"]
    # interrupted once, by Ctrl-C: process 0 alone says so, with a command that keeps --processes
    assert interrupted.count("interrupted:") == 1 and "Traceback" not in interrupted
    assert f"--processes 2 --output {output} --resume {run.info.run_id}" in interrupted
    assert run.info.status == "FINISHED" and run.data.tags["resumed"].startswith("from model")
    assert stdout.count(f"MLflow run {run.info.run_id}") == 1  # one results table, process 0's
    assert "eval/ner/avg_target" in run.data.metrics and "select/all/score" in run.data.metrics
    history = client.get_metric_history(run.info.run_id, "train/all/loss")
    assert {m.step for m in history} == {50, 60}
    assert not list((output / "checkpoints" / run.info.run_id).glob("resume/*"))


def test_two_processes_train_on_the_same_batches_as_one(runs):
    by_processes = runs[1]
    one, two = by_processes["1"].data, by_processes["2"].data
    assert one.params == two.params
    # every example of every batch was trained on once, across the interruption too: the
    # tokens add up to one process's
    assert two.metrics["tokens/train"] == one.metrics["tokens/train"] > 0
    assert two.metrics["tokens/eval"] == one.metrics["tokens/eval"]
    assert two.metrics["params/trainable"] == one.metrics["params/trainable"]
    # the same steps on the same examples: the losses agree closely, if not to the last bit
    # (dropout draws differ, and the loss is a mean over tokens, weighted by examples)
    assert two.metrics["train/all/loss"] == pytest.approx(one.metrics["train/all/loss"], rel=0.1)


def test_a_data_parallel_run_refuses_what_only_one_process_can_do(monkeypatch, capsys):
    assert main(["run", "--method", "dummy", "--processes", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --processes 0 is invalid: must be >= 1"
    monkeypatch.setenv("WORLD_SIZE", "2")  # as accelerate launch sets it
    assert main(["plan", "--setting", "mixed"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: `bench plan` does not run data-parallel")
    assert main(["run", "--method", "dummy", "--processes", "3"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --processes 3, but launched in 2 processes")
