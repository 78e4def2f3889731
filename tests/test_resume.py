"""Crashes lose nothing: checkpoints, `--resume`, Ctrl-C and SIGTERM, failures, NaN losses."""

import signal
import subprocess
import sys
import textwrap
import time

import pytest
from mlflow.tracking import MlflowClient

from bench.checkpoint import Checkpoints
from bench.cli import main
from bench.resources import Stopwatch

# Checkpoints at steps 40, 80 and 120; training losses logged at steps 50, 100 and 120. The
# dummy method with MLM draws masks from the collator's generator (seeded, as the seed is not
# 0); Hyper-X draws dropout masks from torch's global generator. Hyper-X trains for half as
# long (checkpoints at 20, 40 and 60; losses at 50 and 60): it is the slower method.
STEPS = ["--max-steps", "120", "--eval-every", "40", "--no-progress"]
BUDGET = ["--method", "dummy", *STEPS, "--seed", "1", "--set", "method.mlm=true",
          "--set", "train.eval_cap=200"]  # fmt: skip
HYPERX = ["--method", "hyperx-small", "--max-steps", "60", "--eval-every", "20", "--no-progress",
          "--set", "train.eval_cap=100"]  # fmt: skip
# what differs between any two runs, and what the data cache makes differ (`data/encoded`:
# splits this attempt tokenised, `data/cached`: splits it read from the cache)
NOT_COMPARED = ("time/", "memory/", "throughput/", "data/")

# `bench run` whose logging of metric KEY at STEP touches FLAG and then hangs, so that a test
# interrupts it there (between two checkpoints) and nowhere else.
HANGING = """
import pathlib, sys, time
from bench import tracking
from bench.cli import main

flag, key, step = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
log = tracking.Tracker.metrics

def hang(self, values, at=0):
    log(self, values, at)
    if key in values and at == step and not flag.exists():
        flag.touch()
        time.sleep(3600)

tracking.Tracker.metrics = hang
sys.exit(main(sys.argv[4:]))
"""


def _bench(*args, **popen):
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True,
                          text=True, **popen)  # fmt: skip


def _hanging(flag, args, key="train/all/loss", step=50):
    command = [sys.executable, "-c", HANGING, str(flag), key, str(step), *args]
    # a background shell's jobs ignore SIGINT; Python handles it only if it starts not ignored
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def _wait(path, process, timeout=300):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run did not get there in time"
        time.sleep(0.1)


def _runs(output):
    client = MlflowClient(f"sqlite:///{output / 'mlflow.db'}")
    return client, client.search_runs([client.get_experiment_by_name("demo").experiment_id])


def _compared(run):
    return {k: v for k, v in run.data.metrics.items() if not k.startswith(NOT_COMPARED)}


def _history(client, run, key="train/all/loss"):
    return sorted({(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """budget -> the same run never stopped: what every resumed run must end with."""
    done = {}

    def run(budget):
        key = tuple(budget)
        if key not in done:
            output = tmp_path_factory.mktemp("uninterrupted")
            finished = _bench("run", *budget, "--output", str(output))
            assert finished.returncode == 0, finished.stderr
            client, (found,) = _runs(output)
            done[key] = found, _history(client, found)
        return done[key]

    return run


def _resume_and_compare(output, run_id, uninterrupted, budget=BUDGET):
    done = _bench("run", *budget, "--output", str(output), "--resume", run_id)
    assert done.returncode == 0, done.stderr
    client, runs = _runs(output)
    assert [r.info.run_id for r in runs] == [run_id]  # the same MLflow run, no new one
    (run,) = runs
    assert run.info.status == "FINISHED"
    assert "stopped" not in run.data.tags and "error" not in run.data.tags
    expected, history = uninterrupted(budget)
    assert _compared(run) == _compared(expected)  # every score, to the last bit
    assert _history(client, run) == history
    assert not (output / "checkpoints" / run_id / "resume").exists()  # done: nothing to resume
    return run


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_to_the_same_metrics(tmp_path, uninterrupted):
    output, flag = tmp_path / "runs", tmp_path / "hanging"
    process = _hanging(flag, ["run", *HYPERX, "--output", str(output)])
    _wait(flag, process)
    process.kill()  # no handler runs: the run stays RUNNING, its checkpoint is from step 40
    process.communicate()
    _, (run,) = _runs(output)
    assert run.info.status == "RUNNING"
    checkpoint = Checkpoints(output / "checkpoints" / run.info.run_id / "resume").latest()
    assert checkpoint.progress["loop"]["counted"] == 40
    resumed = _resume_and_compare(output, run.info.run_id, uninterrupted, HYPERX)
    assert resumed.data.tags["resumed"] == "from model all, step 40"


@pytest.mark.slow
def test_a_killed_run_that_averages_its_checkpoints_still_averages_every_point(
    tmp_path, uninterrupted
):
    averaged = [*BUDGET, "--selection", "average"]
    output, flag = tmp_path / "runs", tmp_path / "hanging"
    process = _hanging(flag, ["run", *averaged, "--output", str(output)], step=100)
    _wait(flag, process)
    process.kill()  # its checkpoint is from step 80: two points in the sum
    process.communicate()
    _, (run,) = _runs(output)
    checkpoint = Checkpoints(output / "checkpoints" / run.info.run_id / "resume").latest()
    assert checkpoint.progress["loop"]["points"] == 2
    resumed = _resume_and_compare(output, run.info.run_id, uninterrupted, averaged)
    assert resumed.data.params["train.selection"] == "average"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_and_sigterm_checkpoint_the_run_and_mark_it_killed(tmp_path, uninterrupted, signum):
    output, flag = tmp_path / "runs", tmp_path / "hanging"
    process = _hanging(flag, ["run", *BUDGET, "--output", str(output)])
    _wait(flag, process)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    _, (run,) = _runs(output)
    run_id = run.info.run_id
    assert run.info.status == "KILLED"
    assert run.data.tags["stopped"] == f"interrupted; --resume {run_id} continues it"
    assert f"interrupted: run {run_id} is KILLED, checkpoint at model all, step 50" in err
    assert f"--resume {run_id}" in err.splitlines()[-1]  # the command to resume it
    checkpoint = Checkpoints(output / "checkpoints" / run_id / "resume").latest()
    assert checkpoint.progress["loop"]["counted"] == 50  # the step it was interrupted after
    # saved inside the training loop, it holds the 50 steps' time, which the run then adds to
    trained = checkpoint.progress["run"]["seconds"]["train"]
    assert trained > 0
    resumed = _resume_and_compare(output, run_id, uninterrupted)
    assert resumed.data.tags["resumed"] == "from model all, step 50"
    assert resumed.data.metrics["time/train_s"] > trained


@pytest.mark.slow
def test_a_run_interrupted_in_model_selection_redoes_it_on_resume(tmp_path, uninterrupted):
    output, flag = tmp_path / "runs", tmp_path / "hanging"
    process = _hanging(flag, ["run", *BUDGET, "--output", str(output)], "select/all/score", 80)
    _wait(flag, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 130
    _, (run,) = _runs(output)
    checkpoint = Checkpoints(output / "checkpoints" / run.info.run_id / "resume").latest()
    assert checkpoint.progress["loop"]["counted"] == 80
    assert checkpoint.progress["loop"]["selected"] is False
    _resume_and_compare(output, run.info.run_id, uninterrupted)


def test_a_stopwatch_counts_the_block_under_way():
    watch = Stopwatch()
    with watch:
        time.sleep(0.01)
        inside = watch.seconds
        assert inside >= 0.01  # what a checkpoint saved here records
    assert watch.seconds >= inside
    done = watch.seconds
    time.sleep(0.01)
    assert watch.seconds == done  # outside a block it stands still


# A method whose loss turns non-finite, or whose forward raises, at step 3.
FAULTY = """
import torch
from bench.method import register
from methods._dummy import WordEmbeddingHeads
from methods.dummy import Dummy


class Faulty(WordEmbeddingHeads):
    calls = 0

    def forward(self, batch, pair):
        out = super().forward(batch, pair)
        if self.training:
            Faulty.calls += 1
            if Faulty.calls == 3:
                {fault}
        return out


@register
class Method(Dummy):
    name = "faulty"
    description = "a test method that fails at step 3"

    @classmethod
    def build(cls, backbone, plan, tasks, config):
        return Faulty(backbone, tasks, config)
"""


@pytest.mark.parametrize(
    ("fault", "message", "tag"),
    [
        ("out.loss = out.loss * float('nan')",
         "run failed: non-finite loss nan at step 3 on pair", "TrainingError: non-finite loss"),
        ("raise RuntimeError('the disk is full')", None, "RuntimeError: the disk is full"),
    ],
    ids=["nan-loss", "exception"],
)  # fmt: skip
def test_a_failing_run_is_marked_failed_with_its_reason(tmp_path, fault, message, tag):
    plugin = tmp_path / "faulty.py"
    plugin.write_text(FAULTY.format(fault=textwrap.indent(fault, " " * 16).strip()))
    output = tmp_path / "runs"
    done = _bench("run", "--method", "faulty", "--plugin", str(plugin), "--max-steps", "20",
                  "--output", str(output), "--no-progress")  # fmt: skip
    assert done.returncode == 1
    if message is not None:  # a clear line, not a traceback
        assert done.stderr.strip().splitlines()[-1].startswith(message)
    else:
        assert "RuntimeError: the disk is full" in done.stderr
    _, (run,) = _runs(output)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith(tag)


def test_resuming_needs_the_same_flags_and_an_unfinished_run(tmp_path, capsys):
    output = tmp_path / "runs"
    args = ["run", "--method", "dummy", "--max-steps", "10", "--no-progress", "--output",
            str(output)]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    _, (run,) = _runs(output)
    run_id = run.info.run_id
    assert main([*args, "--resume", run_id]) == 2
    assert f"--resume {run_id}: the run is FINISHED" in capsys.readouterr().err
    client = MlflowClient(f"sqlite:///{output / 'mlflow.db'}")
    client.set_terminated(run_id, "KILLED")
    assert main([*args, "--lr", "0.01", "--resume", run_id]) == 2
    err = capsys.readouterr().err
    assert f"--resume {run_id}: the run has method.lr=0.0005, this command method.lr=0.01" in err
    assert client.get_run(run_id).info.status == "KILLED"  # untouched
    before = client.get_run(run_id).data.metrics
    assert main([*args, "--resume", run_id]) == 0  # no checkpoint: it starts over, in that run
    after = client.get_run(run_id)
    assert after.info.status == "FINISHED" and after.data.tags["resumed"] == "from the start"
    assert {k: v for k, v in after.data.metrics.items() if not k.startswith(NOT_COMPARED)} == {
        k: v for k, v in before.items() if not k.startswith(NOT_COMPARED)
    }
