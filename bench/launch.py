"""Where a grid's runs and a sweep's workers execute: here, or as Slurm jobs through submitit.

- `local` (the default): on this machine, each run in a fresh process, one at a time or
  `--parallel K` at once; with CUDA GPUs, each run process sees one of them
  (`CUDA_VISIBLE_DEVICES`), handed out in turn.
- `slurm`: each grid run, or each sweep worker, is a Slurm job submitted through `submitit`
  (`--slurm KEY=VALUE`: submitit's parameters). While the jobs run, a line says how many are
  pending, running, done and failed. A job that Slurm stops (`scontrol requeue`, preemption, a
  time limit) checkpoints its run and marks it KILLED; when Slurm starts it again, it finds that
  run by its job id (tag `slurm.job_id`) and continues it (`--resume`) in the same MLflow run.
  A failed job is reported with its log and the rest go on; Ctrl-C cancels the jobs.

Jobs on several machines share one tracking store and one Optuna storage: a sqlite file on a
shared filesystem is refused (`check_shared`), a server or a database is not.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.errors import BenchError

LAUNCHERS = ("local", "slurm")
JOB_TAG = "slurm.job_id"  # the Slurm job that runs (and, requeued, continues) an MLflow run
POLL_S = 2.0  # how often the Slurm queue is read while jobs run
TIMEOUT_MIN = 24 * 60  # a job's time limit unless --slurm timeout_min=... (submitit's is 5)


@dataclasses.dataclass(frozen=True)
class Failure:
    """A grid run that did not finish: why, and where its log is (None: no log)."""

    what: str
    log: str | None = None


def slurm_options(pairs: Sequence[str]) -> dict[str, Any]:
    """`--slurm KEY=VALUE` items as submitit parameters, typed and checked: submitit's generic
    ones (`cpus_per_task`, `gpus_per_node`, `mem_gb`, `timeout_min`, ...) and its Slurm ones
    (`partition`, `time`, `account`, `qos`, `constraint`, ...)."""
    generic, specific = _parameters()
    options: dict[str, Any] = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BenchError(f"--slurm {item!r} is invalid: expected KEY=VALUE, e.g. partition=gpu")
        if key in generic:
            kind, name = generic[key], key
        elif key in specific:
            kind, name = specific[key], f"slurm_{key}"
        else:
            valid = ", ".join(sorted({*generic, *specific}))
            raise BenchError(f"--slurm {key}={value}: unknown key {key!r}; valid: {valid}")
        options[name] = _typed(key, value, kind)
    return options


def _parameters() -> tuple[dict[str, Any], dict[str, Any]]:
    """submitit's parameter names and types: generic (its AutoExecutor's) and Slurm's own."""
    import inspect

    import submitit
    from submitit.slurm import slurm

    generic = dict(submitit.AutoExecutor._typed_parameters())
    hints = typing.get_type_hints(slurm._make_sbatch_string)
    signature = inspect.signature(slurm._make_sbatch_string)
    internal = {"command", "folder", "map_count", "additional_parameters", "srun_args", "setup",
                "teardown"}  # fmt: skip
    specific = {name: hints.get(name, str) for name in signature.parameters if name not in internal}
    return generic, specific


def _typed(key: str, value: str, kind: Any) -> Any:
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    base = args[0] if args else kind
    if base is bool:
        return value.lower() in ("1", "true", "yes")
    if base in (int, float):
        try:
            return base(value)
        except ValueError:
            raise BenchError(f"--slurm {key}={value}: not a {base.__name__}") from None
    return value


def check_slurm() -> None:
    """Slurm's client commands must be on the PATH."""
    missing = [c for c in ("sbatch", "squeue", "scancel") if shutil.which(c) is None]
    if missing:
        raise BenchError(
            f"--launcher slurm needs Slurm's commands, and {', '.join(missing)} is not on the "
            "PATH (run on a login node, or use --launcher local)"
        )


def check_shared(tracking_uri: str, storage: str | None = None) -> None:
    """Jobs on several machines cannot share a sqlite file: refuse one for the tracking store
    (and for a sweep's Optuna storage), naming what to use instead."""
    if tracking_uri.startswith("sqlite:"):
        raise BenchError(
            f"--launcher slurm cannot share the sqlite store {tracking_uri} between jobs: pass "
            "--tracking-uri with an MLflow server (http://host:5000) or a database "
            "(postgresql://user:password@host/db)"
        )
    if storage is not None and storage.startswith("sqlite:"):
        raise BenchError(
            f"--launcher slurm cannot share the sqlite study storage {storage} between jobs: "
            "pass --storage postgresql://user:password@host/db, or a journal file on a shared "
            "filesystem (--storage journal:/shared/path/study.log)"
        )


def run_local(
    function: Callable, items: list, parallel: int = 1, describe: Callable[[Any], str] = str
) -> list[Any]:
    """`function(item)` for every item, each in a fresh spawned process, `parallel` at a time;
    a failure is a `Failure` in its place, and the rest go on."""
    import concurrent.futures
    import multiprocessing

    devices = _cuda_devices()
    context = multiprocessing.get_context("spawn")
    results: list[Any] = [None] * len(items)
    with concurrent.futures.ProcessPoolExecutor(
        parallel, mp_context=context, max_tasks_per_child=1
    ) as pool:
        futures = {}
        for index, item in enumerate(items):
            device = devices[index % len(devices)] if devices and parallel > 1 else None
            futures[pool.submit(_on_device, device, function, item)] = index
        for future in concurrent.futures.as_completed(futures):
            index = futures[future]
            try:
                results[index] = future.result()
            except KeyboardInterrupt:
                raise
            except BaseException as error:  # reported; the grid goes on
                if parallel == 1 and isinstance(error, BenchError):
                    raise
                results[index] = Failure(f"{describe(items[index])}: {type(error).__name__}: "
                                         f"{error}")  # fmt: skip
    return results


def _cuda_devices() -> list[str]:
    """The GPUs runs may use: CUDA_VISIBLE_DEVICES, else those nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    found = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return [str(i) for i, line in enumerate(found.stdout.splitlines()) if line.startswith("GPU")]


def _on_device(device: str | None, function: Callable, item: Any) -> Any:
    from bench import interrupts

    if device is not None:  # before CUDA starts in this fresh process
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    # `kill`, a session's end: as in `bench run`, a checkpoint and KILLED, which --reuse resumes,
    # rather than a run left RUNNING
    interrupts.stop_on_sigterm()
    return function(item)


class SlurmJob:
    """What a Slurm job runs: `function(item)`, in a run it continues if Slurm started the job
    before (requeued). submitit calls `checkpoint` on preemption or a time limit (SIGUSR2): the
    same call is submitted again, and the run, stopped at a whole step (`bench.interrupts`),
    saves its checkpoint and is marked KILLED before the job exits."""

    def __init__(self, function: Callable) -> None:
        self.function = function

    def __call__(self, item: Any) -> Any:
        from bench import interrupts

        interrupts.stop_on_sigterm()  # scancel, scontrol requeue: checkpoint, KILLED
        try:
            return self.function(item)
        except KeyboardInterrupt:
            # stopped by Slurm: the run is checkpointed; leave no result, so that a requeued
            # attempt's result is the job's, and a cancelled job reads as cancelled
            sys.stdout.flush()
            os._exit(143)

    def checkpoint(self, item: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(self, item)


def run_slurm(
    function: Callable,
    items: list,
    folder: Path,
    options: dict[str, Any],
    describe: Callable[[Any], str] = str,
) -> list[Any]:
    """`function(item)` for every item, each as a Slurm job (logs in `folder`); the states shown
    while they run. Ctrl-C cancels the jobs that have not ended."""
    import submitit

    check_slurm()
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    defaults = {"name": "bench", "timeout_min": TIMEOUT_MIN,
                "slurm_additional_parameters": {"requeue": True}}  # fmt: skip
    executor.update_parameters(**{**defaults, **options})
    jobs = []
    try:  # Ctrl-C from the first submission on cancels what was submitted
        for item in items:
            jobs.append(executor.submit(SlurmJob(function), item))
        print(f"slurm: submitted {len(jobs)} jobs ({jobs[0].job_id}..{jobs[-1].job_id}); logs "
              f"in {folder}", flush=True)  # fmt: skip
        return _watch(jobs, items, describe)
    except KeyboardInterrupt:
        live = [job for job in jobs if not job.paths.result_pickle.exists()]
        for job in live:
            job.cancel(check=False)
        print(f"\nslurm: cancelled {len(live)} jobs", file=sys.stderr, flush=True)
        raise


def _watch(jobs: list, items: list, describe: Callable[[Any], str]) -> list[Any]:
    results: list[Any] = [None] * len(jobs)
    ended: set[int] = set()
    gone: dict[int, float] = {}  # job index -> when it left the queue without a result
    shown = ""
    while len(ended) < len(jobs):
        queue = _queue([j.job_id for i, j in enumerate(jobs) if i not in ended])
        for i, job in enumerate(jobs):
            if i in ended:
                continue
            if job.paths.result_pickle.exists():
                ended.add(i)
                results[i] = _outcome(job, items[i], describe)
            elif job.job_id not in queue:  # the result file follows the job's end closely
                gone.setdefault(i, time.monotonic())
                if time.monotonic() - gone[i] > 10 * POLL_S:
                    ended.add(i)
                    results[i] = Failure(
                        f"{describe(items[i])}: job {job.job_id} left the queue without a "
                        "result (cancelled, or killed)", str(job.paths.stderr)
                    )  # fmt: skip
                    print(f"slurm: {results[i].what}; log: {results[i].log}", flush=True)
        counts = {"pending": 0, "running": 0}
        for i, job in enumerate(jobs):
            if i not in ended and (state := queue.get(job.job_id)):
                counts["running" if state in ("RUNNING", "COMPLETING") else "pending"] += 1
        failed = sum(isinstance(r, Failure) for r in results)
        line = (f"slurm: {counts['pending']} pending, {counts['running']} running, "
                f"{len(ended) - failed} done, {failed} failed (of {len(jobs)})")  # fmt: skip
        if line != shown:
            print(line, flush=True)
            shown = line
        if len(ended) < len(jobs):
            time.sleep(POLL_S)
    return results


def _queue(job_ids: list[str]) -> dict[str, str]:
    """Job id -> its state, for the jobs of `job_ids` still in Slurm's queue."""
    if not job_ids:
        return {}
    found = subprocess.run(
        ["squeue", "-h", "-o", "%i|%T", "-j", ",".join(job_ids)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    states = {}
    for line in found.stdout.splitlines():
        job_id, _, state = line.partition("|")
        states[job_id.strip()] = state.strip()
    return states


def _outcome(job, item: Any, describe: Callable[[Any], str]) -> Any:
    try:
        return job.result()
    except Exception as error:  # the job's own error: reported, the rest go on
        text = str(error).strip().splitlines()
        last = next((line for line in reversed(text) if line.strip()), type(error).__name__)
        failure = Failure(f"{describe(item)}: {last.strip()}", str(job.paths.stderr))
        print(f"slurm: job {job.job_id} failed: {failure.what}; log: {failure.log}", flush=True)
        return failure
