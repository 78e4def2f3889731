"""`python -m bench sweep`: an Optuna study over a method's search space, each trial a normal run.

A trial's objective is its model-selection score (`select/score`: the mean over the Plan's models
of the best mean score on the model-selection pairs, which are source-language dev data in every
setting), never a target's: tuning on targets would leak them into a zero-shot comparison. A trial
reports each selection evaluation, so the median rule can prune it before it finishes.

The study lives in an RDB storage, sqlite in the output folder by default or any SQLAlchemy URL
(PostgreSQL) that workers on several machines share. Every worker runs trials in its own process
until the study holds `trials` finished ones (complete or pruned); a resumed sweep continues the
same study. Workers write heartbeats, so a trial whose worker died is failed and retried once by
the next worker that starts. In MLflow, the study is one parent run (tagged with the best trial's
params) and every trial a run nested under it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import multiprocessing
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import torch
from mlflow import MlflowClient
from mlflow.entities import RunStatus
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, Trial, TrialState

from bench import interrupts, launch, runner
from bench.config import TrainConfig
from bench.errors import BenchError, Stopped, TrainingError
from bench.tracking import Tracker, first_line, hide_password, param_text, resolve_uri

JOURNAL = "journal:"  # --storage journal:PATH, Optuna's journal file
HEARTBEAT_S = 20  # a worker writes its running trial's heartbeat this often
GRACE_S = 60  # a running trial without a heartbeat for this long belongs to a dead worker
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
EDGE_TAG = "warning.best_at_edge"  # on a study's parent run: `at_edge` of the best trial


@dataclasses.dataclass(frozen=True)
class Sweep:
    """What every worker needs to run trials of one study (sent to worker processes)."""

    request: runner.Request  # the fixed part of every trial's run
    study: str
    storage: str
    trials: int  # finished trials the study should hold
    space: dict[str, BaseDistribution]
    prune: bool
    parent_run_id: str
    experiment_id: str

    @property
    def tracking_uri(self) -> str:
        return resolve_uri(self.request.output, self.request.tracking_uri)


def parse_space(items: list[str]) -> dict[str, BaseDistribution]:
    """`--space` values: KEY=float:LOW:HIGH[:log], KEY=int:LOW:HIGH[:log], KEY=choice:A,B,C."""
    space = {}
    for item in items:
        key, _, spec = item.partition("=")
        kind, _, rest = spec.partition(":")
        parts = rest.split(":")
        try:
            if kind in ("float", "int") and len(parts) in (2, 3):
                log = parts[2:] == ["log"]
                if len(parts) == 3 and not log:
                    raise ValueError(parts[2])
                number = float if kind == "float" else int
                cls = FloatDistribution if kind == "float" else IntDistribution
                space[key] = cls(number(parts[0]), number(parts[1]), log=log)
            elif kind == "choice" and rest:
                space[key] = CategoricalDistribution([_value(v) for v in rest.split(",")])
            else:
                raise ValueError(spec)
        except ValueError:
            raise BenchError(
                f"--space {item!r} is invalid: expected KEY=float:LOW:HIGH[:log], "
                "KEY=int:LOW:HIGH[:log] or KEY=choice:A,B,C (LOW < HIGH, LOW > 0 for log)"
            ) from None
    return space


def _value(text: str) -> Any:
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return text


def search_space(
    request: runner.Request, overrides: dict[str, BaseDistribution]
) -> dict[str, BaseDistribution]:
    """The method's declared space with `overrides`, less the options the request fixes (`--set`,
    `--lr`); every key and every bound or choice is checked against the method's options."""
    _, method, method_config, train, _ = runner.resolve(request)
    fixed = {f"method.{k}" for k in request.method_options} | {f"train.{k}" for k in request.train}
    space = {k: v for k, v in {**method.search_space(), **overrides}.items() if k not in fixed}
    for key, distribution in space.items():
        section, _, name = key.partition(".")
        config = {"method": method_config, "train": train}.get(section)
        if config is None or name not in {f.name for f in dataclasses.fields(config)}:
            valid = ", ".join(method.Config.keys() + TrainConfig.keys())
            raise BenchError(f"search space key {key!r} is not an option of {method.name}; "
                             f"valid: {valid}")  # fmt: skip
        for value in _extremes(distribution):
            config.with_values({name: value})  # an invalid bound fails here, before any trial
    if not space:
        raise BenchError(f"nothing to search: --set fixes every option of {method.name}'s space")
    return space


def _extremes(distribution: BaseDistribution) -> list[Any]:
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    return [distribution.low, distribution.high]


def describe(distribution: BaseDistribution) -> str:
    """A distribution as written on the command line (`float:1e-05:0.01:log`)."""
    if isinstance(distribution, CategoricalDistribution):
        return "choice:" + ",".join(map(str, distribution.choices))
    kind = "float" if isinstance(distribution, FloatDistribution) else "int"
    return f"{kind}:{distribution.low}:{distribution.high}" + (":log" if distribution.log else "")


EDGE = 0.05  # a best value in the outer 5% of its range (on the log scale where searched so)


def at_edge(space: dict[str, BaseDistribution], values: dict[str, Any]) -> list[str]:
    """The values that lie at an edge of their searched range, where the best may lie beyond
    it: `method.lr=0.00992 at the high end of float:1e-05:0.01:log`."""
    found = []
    for key, distribution in sorted(space.items()):
        if isinstance(distribution, CategoricalDistribution) or key not in values:
            continue
        ends = [distribution.low, distribution.high, values[key]]
        low, high, value = map(math.log, ends) if distribution.log else ends
        if high <= low:
            continue
        where = (value - low) / (high - low)
        end = "low" if where <= EDGE else "high" if where >= 1 - EDGE else None
        if end:
            found.append(
                f"{key}={_short(values[key])} at the {end} end of {describe(distribution)}"
            )
    return found


def storage_url(output: Path, storage: str | None) -> str:
    """The studies' storage: `--storage`, else a sqlite file in the output folder."""
    return storage or f"sqlite:///{(output / 'optuna.db').resolve()}"


def open_storage(url: str, tracking_uri: str) -> optuna.storages.BaseStorage:
    """An RDB storage with heartbeats, whose trials of a dead worker are retried and their MLflow
    runs in `tracking_uri` ended; `postgresql://` uses psycopg (3), the installed driver.
    `journal:PATH`: Optuna's journal file (a shared filesystem, no database), without
    heartbeats: a dead worker's trial stays RUNNING."""
    if url.startswith(JOURNAL):
        path = Path(url.removeprefix(JOURNAL))
        if not path.parent.is_dir():
            raise BenchError(f"Optuna storage {url}: folder {path.parent} does not exist")
        backend = optuna.storages.journal.JournalFileBackend(str(path))
        return optuna.storages.JournalStorage(backend)
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                heartbeat_stale_trial_callback=_Retry(tracking_uri),
            )  # fmt: skip
    except Exception as error:  # sqlalchemy: unreachable server, bad URL, missing driver
        raise BenchError(
            f"Optuna storage {hide_password(url)} is unusable: {first_line(error)}"
        ) from None


@dataclasses.dataclass(frozen=True)
class _Retry:
    """A trial whose worker died: retried once, and its MLflow run marked KILLED."""

    tracking_uri: str

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)(study, trial)
        client = MlflowClient(self.tracking_uri)
        for run in _trial_runs(client, study.user_attrs["mlflow.experiment_id"], study.study_name):
            tags = run.data.tags
            if tags.get("sweep.trial") == str(trial.number) and run.info.status == "RUNNING":
                client.set_tag(
                    run.info.run_id, "error", f"worker died: no heartbeat in {GRACE_S} s"
                )
                client.set_terminated(run.info.run_id, "KILLED")


def _trial_runs(client: MlflowClient, experiment_id: str, study: str) -> Iterator:
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], f"tags.`sweep.study` = '{study}'", page_token=token
        )
        yield from page
        token = page.token
        if not token:
            return


def prepare(
    request: runner.Request,
    *,
    trials: int,
    study: str | None,
    storage: str | None,
    space: dict[str, BaseDistribution],
    prune: bool,
) -> Sweep:
    """Checks everything, then creates the study and its MLflow parent run, or finds them."""
    prepared = runner.prepare(request)  # names, options, data, backbone, output: all checked
    space = search_space(request, space)
    name = study or f"{prepared.suite.name}-{request.method}-{prepared.plan.setting}"
    url = storage_url(request.output, storage)
    config = json.dumps(
        {
            "params": {
                k: param_text(v)
                for k, v in runner.run_params(
                    request, prepared.suite, prepared.method_config, prepared.train
                ).items()
                if k not in space
            },
            "space": {k: describe(v) for k, v in sorted(space.items())},
            "prune": prune,
        },
        sort_keys=True,
    )
    uri = resolve_uri(request.output, request.tracking_uri)
    found = optuna.create_study(
        study_name=name, storage=open_storage(url, uri), direction="maximize", load_if_exists=True
    )
    recorded = found.user_attrs.get("bench.config")
    if recorded is not None and recorded != config:
        raise BenchError(
            f"study {name!r} in {hide_password(url)} was created for another method, setting, "
            f"budget or search space ({_difference(recorded, config)}); name a new one with --study"
        )
    tracker = Tracker(uri, prepared.suite.name, request.output / "artifacts")
    parent = found.user_attrs.get("mlflow.parent_run_id")
    recorded_trials = None  # the parent's `sweep.trials` tag, if it has one
    if parent is None:
        params = {"sweep.storage": hide_password(url), "sweep.prune": prune}
        params |= {f"space.{k}": describe(v) for k, v in space.items()}
        params |= json.loads(config)["params"]
        tags = {
            "method": request.method, "setting": prepared.plan.setting,
            "suite": prepared.suite.name, "seed": str(request.seed), "sweep.study": name,
        }  # fmt: skip
        parent = tracker.start(f"sweep-{name}", params, tags)
        found.set_user_attr("bench.config", config)
        found.set_user_attr("mlflow.parent_run_id", parent)
        found.set_user_attr("mlflow.experiment_id", tracker.experiment_id)
    else:
        try:
            recorded_trials = tracker.client.get_run(parent).data.tags.get("sweep.trials")
        except Exception:
            raise BenchError(
                f"study {name!r} logs to MLflow run {parent}, which is not in {uri}: give the "
                "--tracking-uri the sweep started with (workers on several machines need one "
                "MLflow server)"
            ) from None
        done = sum(t.state in DONE for t in found.get_trials(deepcopy=False))
        if done < trials:  # a finished study's parent stays as it ended
            tracker.client.update_run(parent, status="RUNNING")
    if recorded_trials != str(trials):
        tracker.client.set_tag(parent, "sweep.trials", str(trials))
    experiment = found.user_attrs["mlflow.experiment_id"]
    return Sweep(request, name, url, trials, space, prune, parent, experiment)


def _difference(recorded: str, asked: str) -> str:
    old, new = _flat(json.loads(recorded)), _flat(json.loads(asked))
    key = next(k for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k))
    return f"{key}: {old.get(key, '-')} then, {new.get(key, '-')} now"


def _flat(config: dict) -> dict[str, Any]:
    return {
        f"{section}.{k}" if isinstance(values, dict) else section: v
        for section, values in config.items()
        for k, v in (values.items() if isinstance(values, dict) else [("", values)])
    }


def run(sweep: Sweep, workers: int) -> None:
    """Runs trials until the study holds `sweep.trials` finished ones: in this process, or in
    `workers` processes sharing the study (spawned: each imports torch afresh)."""
    if workers == 1:
        work(sweep, 0, threads=torch.get_num_threads())
        return
    threads = max(1, (os.cpu_count() or 1) // workers)  # the cores shared, not oversubscribed
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_worker_process, args=(sweep, i, threads)) for i in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    failed = [f"{i} (exit {p.exitcode})" for i, p in enumerate(processes) if p.exitcode]
    if failed:
        raise TrainingError(f"sweep workers {', '.join(failed)} stopped with an error")


def run_slurm(sweep: Sweep, workers: int, options: dict) -> None:
    """Runs the study's workers as `workers` Slurm jobs (`bench.launch`), each a worker as on
    one machine; a job that fails is reported with its log, the others go on."""
    items = [(sweep, worker) for worker in range(workers)]
    folder = sweep.request.output.resolve() / "slurm"
    results = launch.run_slurm(_slurm_worker, items, folder, options, lambda i: f"worker {i[1]}")
    failed = [r for r in results if isinstance(r, launch.Failure)]
    if failed:
        raise TrainingError(
            "sweep jobs failed: " + "; ".join(f"{f.what} (log: {f.log})" for f in failed)
        )


def _slurm_worker(item: tuple[Sweep, int]) -> None:
    sweep, worker = item
    threads = int(os.environ.get("SLURM_CPUS_PER_TASK") or os.cpu_count() or 1)
    work(sweep, worker, threads)


def _worker_process(sweep: Sweep, worker: int, threads: int) -> None:
    interrupts.stop_on_sigterm()  # a trial is stopped as by Ctrl-C: FAIL, its run KILLED
    try:
        work(sweep, worker, threads)
    except KeyboardInterrupt:  # the whole process group was interrupted; the main one reports
        raise SystemExit(130) from None


def work(sweep: Sweep, worker: int, threads: int) -> None:
    """One worker: trials, one at a time, until the study has enough finished (or as many
    failed: a method that fails every trial should not loop)."""
    torch.set_num_threads(threads)
    storage = open_storage(sweep.storage, sweep.tracking_uri)
    study = optuna.load_study(study_name=sweep.study, storage=storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # a dead worker's trials: failed, retried
    if _enough(study, sweep.trials):
        return
    # Seeded TPE, its seed moved on by what the study holds, so that a resumed sweep and a second
    # worker do not draw the first trials' values again; constant liar keeps parallel workers
    # from suggesting what a running trial already tries.
    startup = max(2, min(10, sweep.trials // 3))
    study.sampler = optuna.samplers.TPESampler(
        seed=sweep.request.seed + 1000 * worker + len(study.trials),
        n_startup_trials=startup, constant_liar=True,
    )  # fmt: skip
    study.pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=2)
        if sweep.prune
        else optuna.pruners.NopPruner()
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # `_ended` says it, with the count

    def ended(study: optuna.Study, trial: FrozenTrial) -> None:
        print(_ended(study, trial, sweep.trials), flush=True)
        if _enough(study, sweep.trials):
            study.stop()

    study.optimize(
        lambda trial: objective(sweep, trial), catch=(Exception,), callbacks=[ended],
        gc_after_trial=True,
    )  # fmt: skip


def _ended(study: optuna.Study, trial: FrozenTrial, trials: int) -> str:
    """One line when a trial ends: its state and score, the study's count, the best so far."""
    done = sum(t.state in DONE for t in study.get_trials(deepcopy=False))
    score = f" {trial.value:.2f}" if trial.value is not None else ""
    why = trial.user_attrs.get("error", "") if trial.state == TrialState.FAIL else ""
    line = f"trial {trial.number} {trial.state.name.lower()}{score}{f' ({why})' if why else ''}"
    line += f"; {done} of {trials} finished"
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if complete:
        best = max(complete, key=lambda t: t.value)
        line += f", best {best.value:.2f} (trial {best.number})"
    return line


def _enough(study: optuna.Study, trials: int) -> bool:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    done = sum(s in DONE for s in states)
    return done >= trials or states.count(TrialState.FAIL) >= trials


def objective(sweep: Sweep, trial: Trial) -> float:
    values = {key: _suggest(trial, key, d) for key, d in sweep.space.items()}
    shown = ", ".join(f"{k}={param_text(v)}" for k, v in values.items())
    print(f"trial {trial.number} started: {shown}", flush=True)
    base = sweep.request
    evaluations = itertools.count(1)

    def report(score: float, last: bool) -> None:
        step = next(evaluations)
        trial.report(score, step)
        if not last and trial.should_prune():  # at the last, the trial has done its work
            raise Stopped(f"pruned at selection evaluation {step} (score {score:.2f})")

    request = dataclasses.replace(
        base,
        train={**base.train, **_section(values, "train")},
        method_options={**base.method_options, **_section(values, "method")},
        tags={
            "mlflow.parentRunId": sweep.parent_run_id,
            "sweep.study": sweep.study,
            "sweep.trial": str(trial.number),
            "mlflow.runName": f"{sweep.study}-trial-{trial.number}",
        },
        on_select=report,
        progress=False,
    )
    try:
        result = runner.execute(runner.prepare(request))
    except Stopped as stop:
        raise optuna.TrialPruned(str(stop)) from None
    except (Exception, KeyboardInterrupt) as error:
        trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:1000])
        raise
    return result.metrics["select/score"]


def _suggest(trial: Trial, key: str, distribution: BaseDistribution) -> Any:
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(key, distribution.choices)
    suggest = (
        trial.suggest_float if isinstance(distribution, FloatDistribution) else trial.suggest_int
    )
    return suggest(key, distribution.low, distribution.high, log=distribution.log)


def _section(values: dict[str, Any], section: str) -> dict[str, Any]:
    return {k.partition(".")[2]: v for k, v in values.items() if k.startswith(f"{section}.")}


@dataclasses.dataclass(frozen=True)
class Row:
    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    run_id: str
    seconds: float | None
    note: str


def finish(sweep: Sweep) -> list[Row]:
    """The study's trials with their MLflow runs; the best trial's params tagged on the parent,
    which is FINISHED once the study holds enough finished trials. What the parent holds
    already is not logged again: a finished study met again (`compare --tune --reuse`) leaves
    its parent's metric history and end time as they were."""
    storage = open_storage(sweep.storage, sweep.tracking_uri)
    study = optuna.load_study(study_name=sweep.study, storage=storage)
    client = MlflowClient(sweep.tracking_uri)
    parent = client.get_run(sweep.parent_run_id)
    runs = {
        r.data.tags.get("sweep.trial"): r
        for r in _trial_runs(client, sweep.experiment_id, sweep.study)
        if r.info.run_id != sweep.parent_run_id
    }
    trials = study.get_trials(deepcopy=False)
    rows = []
    for t in trials:
        run = runs.get(str(t.number))
        seconds = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete
            else None
        )
        note = t.user_attrs.get("error") or (run.data.tags.get("stopped", "") if run else "")
        if (retried := t.system_attrs.get("failed_trial")) is not None:  # set by the retry
            note = f"retry of trial {retried}"
        rows.append(Row(t.number, t.state.name, t.value, dict(t.params),
                        run.info.run_id if run else "", seconds, note))  # fmt: skip
    done = sum(t.state in DONE for t in trials)
    metrics = {f"sweep/{s.name.lower()}": sum(t.state is s for t in trials) for s in TrialState}
    if any(t.state is TrialState.COMPLETE for t in trials):
        best = study.best_trial
        tags = {"best.trial": str(best.number), "best.score": f"{best.value:.4f}"}
        tags |= {f"best.{k}": param_text(v) for k, v in best.params.items()}
        if edges := at_edge(sweep.space, best.params):
            tags[EDGE_TAG] = "; ".join(edges)
        if run := runs.get(str(best.number)):
            tags["best.run_id"] = run.info.run_id
        for key, value in tags.items():
            if parent.data.tags.get(key) != value:
                client.set_tag(sweep.parent_run_id, key, value)
        metrics["sweep/best_score"] = best.value
    if any(parent.data.metrics.get(key) != value for key, value in metrics.items()):
        for key, value in metrics.items():
            client.log_metric(sweep.parent_run_id, key, value, step=len(rows))
    if done >= sweep.trials and parent.info.status != "FINISHED":
        client.set_terminated(sweep.parent_run_id, RunStatus.to_string(RunStatus.FINISHED))
    return rows


def interrupted(sweep: Sweep) -> None:
    """A stopped sweep: its parent run is KILLED until the same command resumes it."""
    client = MlflowClient(sweep.tracking_uri)
    client.set_tag(sweep.parent_run_id, "stopped", "interrupted; the same command resumes it")
    client.set_terminated(sweep.parent_run_id, RunStatus.to_string(RunStatus.KILLED))


def render(sweep: Sweep, rows: list[Row]) -> str:
    keys = list(sweep.space)
    table = [["trial", "state", "select score", *keys, "MLflow run", "s", "note"]]
    for r in rows:
        values = [_short(r.params.get(k)) for k in keys]
        score = "-" if r.value is None else f"{r.value:.2f}"
        seconds = "-" if r.seconds is None else f"{r.seconds:.0f}"
        table.append([str(r.number), r.state, score, *values, r.run_id[:12] or "-", seconds,
                      r.note[:80]])  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table
    ]
    done = [r for r in rows if r.state in ("COMPLETE", "PRUNED")]
    complete = [r for r in rows if r.state == "COMPLETE"]
    failed = sum(r.state == "FAIL" for r in rows)
    summary = (
        f"study {sweep.study} in {hide_password(sweep.storage)}: {len(done)} of {sweep.trials} "
        f"finished ({len(done) - len(complete)} pruned), {failed} failed"
    )
    if complete:
        best = max(complete, key=lambda r: r.value)
        options = " ".join(f"--set {k}={best.params[k]}" for k in keys)
        summary += f"\nbest: trial {best.number}, selection score {best.value:.2f}: {options}"
        if edges := at_edge(sweep.space, best.params):
            summary += f"\nwarning: {'; '.join(edges)}: the best may lie beyond; widen --space"
    return "\n".join([*lines, "", summary])


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "-" if value is None else str(value)
