"""`python -m bench compare`: a grid of methods x settings x seeds on one suite, one table.

Every run is a normal run (one MLflow run each), executed in a fresh process: peak memory is a
per-process high-water mark, so runs sharing a process would inherit each other's peaks. With
`reuse`, a finished run already in the store whose params are exactly those the grid would log
(method, setting, seed, suite, backbone and every option) stands in for a new one, and an
interrupted one continues from its checkpoint: a grid that was interrupted, or extended by a
method, runs only what is missing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import statistics
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from bench import launch, runner, sweep
from bench.errors import TrainingError
from bench.report import (
    BUDGET,
    SERVED_OTHERWISE,
    SWEEP_TAG,
    budget_cell,
    budgets_compared,
    language_notes,
    mean_sd,
    seeds_text,
    trained_params,
    trained_seconds,
)
from bench.request import Entry
from bench.settings import ignored
from bench.tracking import (
    NOT_LEARNED,
    STREAM_PARAM,
    Tracker,
    input_params,
    param_text,
    resolve_uri,
)


@dataclasses.dataclass(frozen=True)
class Tuned:
    """An entry's tuning study: its values, which the grid's runs of the entry take."""

    study: str
    storage: str
    setting: str
    trials: int  # finished trials asked for (complete or pruned)
    complete: int
    pruned: int
    best_trial: int
    best_score: float
    values: dict[str, Any]  # option key -> the best trial's value
    edges: tuple[str, ...] = ()  # the values at an edge of their searched range (`sweep.at_edge`)


@dataclasses.dataclass(frozen=True)
class Cell:
    method: str  # the entry's label
    setting: str
    runs: tuple[dict[str, float], ...]  # metrics of each seed's run
    run_ids: tuple[str, ...]
    targets: tuple[str, ...] = ()  # the evaluated target pairs, `task/language`
    tags: tuple[dict[str, str], ...] = ()  # each run's tags and `STREAM_PARAM`
    averaged: bool = False  # one run: the average of the seeds' weights (`run_average`)

    def values(self, key: str) -> list[float]:
        return [m[key] for m in self.runs if m.get(key) is not None]


def _execute(request: runner.Request) -> tuple[str, dict[str, float], dict[str, str]]:
    result = runner.execute(runner.prepare(request))
    return (
        result.run_id,
        result.metrics,
        _facts(MlflowClient(result.tracking_uri).get_run(result.run_id)),
    )


def _average(item: tuple[runner.Request, tuple[str, ...]]) -> tuple[str, dict, dict]:
    from bench import averaging

    request, run_ids = item
    result = averaging.average_runs(request, list(run_ids))
    return (
        result.run_id,
        result.metrics,
        _facts(MlflowClient(result.tracking_uri).get_run(result.run_id)),
    )


def _facts(run) -> dict[str, str]:
    """What reports read of a run besides its metrics: its tags and its labelled stream."""
    return {**run.data.tags, STREAM_PARAM: run.data.params.get(STREAM_PARAM, "")}


def _request(entry: Entry, setting: str, seed: int, grid: dict) -> runner.Request:
    train = {**grid["train"], **entry.train}
    return runner.Request(
        method=entry.method, setting=setting, suite=grid["suite"], seed=seed,
        output=grid["output"], method_options=entry.options,
        tracking_uri=grid.get("tracking_uri"),
        train={k: v for k, v in train.items() if k not in ignored(train, setting)},
        progress=False, plugins=grid["plugins"],  # loaded again in each run's fresh process
    )  # fmt: skip


def tune(
    entries: list[Entry],
    setting: str,
    trials: int,
    *,
    suite: str,
    output: Path,
    train: dict,
    plugins: tuple[Path, ...] = (),
    tracking_uri: str | None = None,
) -> dict[str, Tuned]:
    """Equal tuning: for every entry, a `trials`-trial Optuna study (`bench.sweep`) over the
    method's own search space, at seed 0 (the sampler's seed too), on `setting` with the grid's
    budget, scored on the source dev pairs alone. A study that exists already continues."""
    # a trial tests its own rule's weights alone (no other rules' runs, no oracle)
    train = {k: v for k, v in train.items() if k not in ("also_selection", "oracle")}
    grid = {"suite": suite, "output": output, "train": train, "plugins": plugins,
            "tracking_uri": tracking_uri}  # fmt: skip
    tuned = {}
    for entry in entries:
        request = _request(entry, setting, 0, grid)
        suite_, _, method_config, train_config, _ = runner.resolve(request)
        params = runner.run_params(request, suite_, method_config, train_config)
        digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
        slug = re.sub(r"[^A-Za-z0-9.-]+", "-", entry.label).strip("-")
        name = f"tune-{suite_.name}-{slug}-{setting}-{digest.hexdigest()[:8]}"
        spec = sweep.prepare(request, trials=trials, study=name, storage=None, space={},
                             prune=True)  # fmt: skip
        print(f"tuning {entry.label}: study {name}, {trials} trials", flush=True)
        sweep.run(spec, 1)
        rows = sweep.finish(spec)
        complete = [r for r in rows if r.state == "COMPLETE"]
        if not complete:
            raise TrainingError(f"study {name} of {entry.label} has no complete trial")
        best = max(complete, key=lambda r: r.value)
        tuned[entry.label] = Tuned(
            name, spec.storage, setting, trials, len(complete),
            sum(r.state == "PRUNED" for r in rows), best.number, best.value, best.params,
            tuple(sweep.at_edge(spec.space, best.params)),
        )  # fmt: skip
        given = "".join(f":{k}={v}" for k, v in entry.options.items())
        print(f"tuned {entry.label}: best trial {best.number} ({best.value:.4g}); without "
              f"tuning: --methods {entry.method}{given}{exact_values(tuned[entry.label])}",
              flush=True)  # fmt: skip
    return tuned


def exact_values(tuned: Tuned) -> str:
    """A study's best values as the `--methods` entry's tail that passes them to a grid
    without tuning: `:lr=0.00020547625125911338:train.warmup_ratio=0.178...`."""
    return "".join(f":{k.removeprefix('method.')}={v!r}" for k, v in sorted(tuned.values.items()))


def tuned_entry(entry: Entry, tuned: Tuned | None) -> tuple[Entry, dict]:
    """The entry with its study's method values, and its study's train values."""
    if tuned is None:
        return entry, {}
    values = {k.partition(".")[2]: v for k, v in tuned.values.items() if k.startswith("method.")}
    train = {k.partition(".")[2]: v for k, v in tuned.values.items() if k.startswith("train.")}
    return dataclasses.replace(entry, options={**entry.options, **values}), train


def run_grid(
    entries: list[Entry],
    settings: list[str],
    seeds: int,
    *,
    suite: str,
    output: Path,
    train: dict,
    plugins: tuple[Path, ...] = (),
    reuse: bool = False,
    tuned: dict[str, Tuned] | None = None,
    run_average: bool = False,
    launcher: str = "local",
    parallel: int = 1,
    slurm: dict | None = None,
    tracking_uri: str | None = None,
) -> tuple[list[Cell], list[launch.Failure]]:
    """The grid's cells, each with its seeds' finished runs, and the runs that failed (the rest
    go on). Runs execute as `launcher` says (`bench.launch`): here, `parallel` at once, or as
    Slurm jobs with `slurm`'s parameters. With `run_average`, each cell of two seeds or more is
    followed by one of the run that tests the average of their weights."""
    tuned = tuned or {}
    requests = {}
    for entry in entries:
        study = tuned.get(entry.label)
        chosen, extra = tuned_entry(entry, study)
        grid = {"suite": suite, "output": output, "train": {**train, **extra}, "plugins": plugins,
                "tracking_uri": tracking_uri}  # fmt: skip
        tags = {"tune.study": study.study, "tune.trials": str(study.trials)} if study else {}
        for setting in settings:
            requests[(entry.label, setting)] = [
                dataclasses.replace(_request(chosen, setting, seed, grid), tags=tags)
                for seed in range(seeds)
            ]
    plans = {  # every name and value checked before the first run
        cell: runner.prepare(batch[0]).plan for cell, batch in requests.items()
    }
    first = next(iter(requests.values()))[0]
    experiment = runner.resolve(first)[0].name
    uri = resolve_uri(output, tracking_uri)
    # the store and the experiment exist before runs start side by side: two processes that
    # create a sqlite store at once race over its schema
    Tracker(uri, experiment, output / "artifacts")
    finished, stopped = _stored_runs(uri, experiment) if reuse else ({}, {})
    averages = _stored_averages(uri, experiment) if reuse else {}
    outcomes: dict[tuple, Any] = {}
    pending = []
    for cell, batch in requests.items():
        for seed, request in enumerate(batch):
            key = _key(request)
            if key in finished:
                outcomes[(cell, seed)] = finished[key]
                continue
            if key in stopped:  # continues from its checkpoint, in the same MLflow run
                print(f"resuming run {stopped[key]} ({request.method}, {request.setting}, seed "
                      f"{request.seed}) from its checkpoint", flush=True)  # fmt: skip
                request = dataclasses.replace(request, resume=stopped[key])
            pending.append(((cell, seed), request))
    run = _launcher(launcher, parallel, slurm, output)
    for (where, _), outcome in zip(pending, run(_execute, [r for _, r in pending]), strict=True):
        outcomes[where] = outcome
    cells = []
    for (label, setting), batch in requests.items():
        results = [
            o
            for seed in range(len(batch))
            if not _failed_run(o := outcomes[(label, setting), seed])
        ]
        if not results:
            continue
        plan = plans[(label, setting)]
        targets = [str(e.pair) for m in plan.models for e in m.eval if e.role == "target"]
        cells.append(
            Cell(
                label,
                setting,
                runs=tuple(m for _, m, _ in results),
                run_ids=tuple(i for i, _, _ in results),
                targets=tuple(dict.fromkeys(targets)),
                tags=tuple(t for _, _, t in results),
            )
        )
    if run_average:
        cells = _with_averages(cells, requests, averages, run)
    failures = [o for o in outcomes.values() if _failed_run(o)]
    return cells, failures


def _failed_run(outcome: Any) -> bool:
    return isinstance(outcome, launch.Failure)


def _launcher(name: str, parallel: int, slurm: dict | None, output: Path):
    """`run(function, requests)`: each request's outcome (or a `launch.Failure`), in order."""

    def describe(request: runner.Request) -> str:
        return f"{request.method}, {request.setting}, seed {request.seed}"

    if name == "slurm":
        folder = output / "slurm"
        return lambda function, items: (
            launch.run_slurm(_SlurmRun(function), items, folder, slurm or {}, describe)
            if items
            else []
        )
    return lambda function, items: launch.run_local(function, items, parallel, describe)


def _with_averages(cells: list[Cell], requests: dict, averages: dict, run) -> list[Cell]:
    """Each cell of two runs or more, followed by its run average (from the store if there)."""
    wanted = [(c, requests[(c.method, c.setting)][0]) for c in cells if len(c.run_ids) > 1]
    todo = [(c, r) for c, r in wanted if c.run_ids not in averages]
    done = run(_average, [(r, c.run_ids) for c, r in todo])
    found = {**averages, **{c.run_ids: o for (c, _), o in zip(todo, done, strict=True)}}
    extended = []
    for c in cells:
        extended.append(c)
        outcome = found.get(c.run_ids)
        if outcome is None or _failed_run(outcome):
            continue
        run_id, metrics, facts = outcome
        extended.append(
            Cell(
                f"{c.method} [run average]",
                c.setting,
                runs=(metrics,),
                run_ids=(run_id,),
                targets=c.targets,
                tags=(facts,),
                averaged=True,
            )
        )
    return extended


class _SlurmRun:
    """A grid run in a Slurm job: the MLflow run this job started before it was requeued, if
    any, continues (`--resume`); the run is tagged with the job's id."""

    def __init__(self, function) -> None:
        self.function = function

    def __call__(self, item):
        job = os.environ.get("SLURM_JOB_ID", "")
        request = item[0] if isinstance(item, tuple) else item
        earlier = _run_of_job(request, job) if job else None
        tagged = dataclasses.replace(
            request, tags={**request.tags, launch.JOB_TAG: job}, resume=earlier or request.resume
        )
        if earlier:
            print(f"job {job}: continuing run {earlier} from its checkpoint", flush=True)
        return self.function((tagged, *item[1:]) if isinstance(item, tuple) else tagged)


def _run_of_job(request: runner.Request, job: str) -> str | None:
    """The unfinished run a Slurm job started in an earlier attempt (requeued), if any."""
    client = MlflowClient(resolve_uri(request.output, request.tracking_uri))
    experiment = client.get_experiment_by_name(runner.resolve(request)[0].name)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        f"tags.`{launch.JOB_TAG}` = '{job}' and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def _stored_averages(uri: str, experiment: str) -> dict[tuple[str, ...], tuple]:
    """The finished run-average runs of a suite, by the runs they averaged."""
    from bench.averaging import TAG

    client = MlflowClient(uri)
    found_experiment = client.get_experiment_by_name(experiment)
    if found_experiment is None:
        return {}
    runs = client.search_runs(
        [found_experiment.experiment_id],
        f"attributes.status = 'FINISHED' and tags.{TAG} != ''",
        order_by=["attributes.start_time DESC"],
        max_results=1000,
    )
    found = {}
    for run in runs:
        found.setdefault(
            tuple(run.data.tags[TAG].split(",")),
            (run.info.run_id, dict(run.data.metrics), _facts(run)),
        )
    return found


def _key(request: runner.Request) -> tuple:
    suite, _, method_config, train, _ = runner.resolve(request)
    params = runner.run_params(request, suite, method_config, train)
    return tuple(sorted((k, param_text(v)) for k, v in params.items()))


def _stored_runs(
    uri: str, experiment: str
) -> tuple[dict[tuple, tuple[str, dict, dict]], dict[tuple, str]]:
    """The grid runs of a suite already in the store, by params: the finished ones' (run id,
    metrics, tags), and the id of the latest interrupted one (KILLED: Ctrl-C, SIGTERM, a
    preempted job), which `--reuse` resumes from its checkpoint rather than starting over. The
    labelled stream's digest, a result, is not a param the grid asks for. Tuning runs
    (`SWEEP_TAG`) are not grid runs, as `report` does not count them either."""
    client = MlflowClient(uri)
    found_experiment = client.get_experiment_by_name(experiment)
    if found_experiment is None:
        return {}, {}
    finished, stopped, token = {}, {}, None
    while True:
        page = client.search_runs(  # MLflow's filter has no OR: statuses are picked below
            [found_experiment.experiment_id],
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        for run in page:
            if SWEEP_TAG in run.data.tags or run.info.status not in ("FINISHED", "KILLED"):
                continue
            key = tuple(sorted(input_params(run.data.params).items()))
            if run.info.status == "FINISHED":
                finished.setdefault(key, (run.info.run_id, dict(run.data.metrics), _facts(run)))
            else:
                stopped.setdefault(key, run.info.run_id)
        token = page.token
        if not token:
            return finished, stopped


def render(
    cells: list[Cell],
    *,
    suite: str,
    command: str,
    plots: list[tuple[str, Path]] = (),
    tuned: dict[str, Tuned] | None = None,
) -> str:
    tasks = _tasks(cells)
    header = ["method", "setting", *[f"{t} (avg target)" for t in tasks]]
    header += ["trained params", "peak RSS MB", "train s (with stages)"]
    lines = [
        f"# Methods compared on the {suite} suite",
        "",
        f"Regenerate: `{command}`",
        "",
        "Average target score per task (zero-shot pairs; entity F1 for NER, accuracy otherwise),",
        "mean ± standard deviation over seeds; one MLflow run per seed. *Trained params* counts",
        "what the run trains plus what the method trained before it and froze (MAD-X's language",
        "adapters); *train s* is the run's training loop plus the time its stages took to train",
        "(when they were trained, in this run or an earlier one whose cache it reused).",
        "Each setting averages over its own targets (mixed trains on more languages, so fewer",
        "pairs are targets, and the unseen task-language combinations among them): compare",
        "methods within a setting. A † marks a method with a run that did not learn (a source",
        "pair's test score not above the majority reference; see below).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for c in cells:
        row = [f"`{c.method}`" + " †" * any(_failed(c)), c.setting]
        row[0] += f" {SERVED_OTHERWISE}" * bool(language_notes(list(c.tags)))
        row += [mean_sd(c.values(f"eval/{t}/avg_target")) for t in tasks]
        trained = [trained_params(m) for m in c.runs]
        row += [f"{int(statistics.fmean(trained)):,}"]
        row += [f"{statistics.fmean(c.values('memory/peak_rss_mb')):,.0f}"]
        row += [f"{statistics.fmean(trained_seconds(m) for m in c.runs):.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    for setting in dict.fromkeys(c.setting for c in cells):  # fitted on the setting's sources
        first = next(c for c in cells if c.setting == setting).runs[0]
        for name in ("majority", "lookup"):
            values = [first.get(f"reference/{name}/{t}/avg_target") for t in tasks]
            texts = ["-" if v is None else f"{v:.1f}" for v in values]
            lines.append(f"| reference: {name} | {setting} | " + " | ".join(texts) + " | | | |")
    for c in cells:  # averages over targets a method served otherwise than the rest
        notes = language_notes(list(c.tags))
        served = "; ".join(f"{lang}: {text}" for lang, text in notes.items())
        lines += [f"\n{SERVED_OTHERWISE} `{c.method}`, {c.setting}: {served}"] if notes else []
    lines += ["", "## Budgets", "", *_budget_note(), ""]
    lines += _budget_table(cells)
    lines += ["", *_budget_reading(cells)]
    lines += ["", "## Source pairs", "", *_source_note(), ""]
    lines += _source_table(cells, tasks)
    if tuned:
        lines += ["", "## Tuning", "", *_tuning(tuned)]
    if plots:
        lines += ["", *[f"![{title}]({path.name})" for title, path in plots]]
    lines += ["", "## Best method per setting and task (computed)", ""]
    lines += _reading(cells, tasks)
    lines += ["", "## Every run", "", "Average target score per task; seconds of wall time.", ""]
    lines += _runs_table(cells, tasks)
    return "\n".join(lines) + "\n"


def _budget_note() -> list[str]:
    return [
        "What each method trained on, mean over seeds: batches of labelled pairs, MLM batches",
        "within the run, and batches of stages trained before it (MAD-X's language adapters,",
        "counted whether trained by this grid or taken from the cache); their non-padding",
        "tokens; and the training FLOPs, measured (PyTorch's `FlopCounterMode` on one step per",
        "task, per token, times the tokens; stages included). *Same labelled batches*: every",
        "seed's runs drew equal labelled streams (`budget.labelled_stream`) across the methods.",
    ]


def _budget_table(cells: list[Cell]) -> list[str]:
    header = ["method", "setting", *[name for _, name in BUDGET], "same labelled batches"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in cells:
        row = [f"`{c.method}`", c.setting]
        for key, _ in BUDGET:
            row.append(budget_cell(key, c.values(key)))
        row.append(_same_stream(cells, c))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _streams(cell: Cell) -> tuple[str, ...]:
    return tuple(t.get(STREAM_PARAM, "") for t in cell.tags)


def _same_stream(cells: list[Cell], cell: Cell) -> str:
    if cell.averaged:
        return "its seeds'"
    others = [c for c in cells if c.setting == cell.setting and c is not cell and not c.averaged]
    if not all(_streams(cell)) or not others:
        return "-"
    return "yes" if all(_streams(c) == _streams(cell) for c in others) else "no"


def _budget_reading(cells: list[Cell]) -> list[str]:
    """Per setting, one line: which budgets the methods compared had in common, which not."""
    lines = []
    for setting in dict.fromkeys(c.setting for c in cells):
        group = [c for c in cells if c.setting == setting]
        runs = {c.method: list(c.runs) for c in group}
        streams = {c.method: _streams(c) for c in group if not c.averaged}
        lines.append(f"- {setting}: {budgets_compared(runs, streams)}.")
    return lines


def _source_note() -> list[str]:
    return [
        "Average test score on the source pairs (the languages each model trained on with",
        "labels), mean ± sd over seeds, beside the majority reference: a method that does not",
        "beat it there learned nothing it could transfer. Runs tagged `warning.not_learned`:",
    ]


def _failed(cell: Cell) -> list[str]:
    return [t[NOT_LEARNED] for t in cell.tags if NOT_LEARNED in t]


def _source_table(cells: list[Cell], tasks: list[str]) -> list[str]:
    header = ["method", "setting", *[f"{t} (avg source)" for t in tasks], "runs not learned"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in cells:
        row = [f"`{c.method}`", c.setting]
        row += [mean_sd(c.values(f"eval/{t}/avg_source")) for t in tasks]
        failed = _failed(c)
        row.append(f"{len(failed)} of {len(c.runs)}" + (f": {failed[0]}" if failed else ""))
        lines.append("| " + " | ".join(row) + " |")
    for setting in dict.fromkeys(c.setting for c in cells):
        first = next(c for c in cells if c.setting == setting).runs[0]
        values = [first.get(f"reference/majority/{t}/avg_source") for t in tasks]
        texts = ["-" if v is None else f"{v:.1f}" for v in values]
        lines.append(f"| reference: majority | {setting} | " + " | ".join(texts) + " | |")
    return lines


def _tuning(tuned: dict[str, Tuned]) -> list[str]:
    lines = [
        "Every method was tuned by an Optuna study of the same number of trials (TPE, seed 0,",
        "median pruning), over its own search space, with the grid's budget, on the source",
        "languages' dev pairs alone; its grid runs take the best trial's values.",
        "",
        "| method | study | tuned on | trials (complete, pruned) | best trial | source dev score "
        "| values |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, t in tuned.items():
        values = ", ".join(f"`{k}`={_short(v)}" for k, v in sorted(t.values.items()))
        lines.append(
            f"| `{label}` | `{t.study}` | {t.setting} | {t.trials} ({t.complete}, {t.pruned}) "
            f"| {t.best_trial} | {t.best_score:.1f} | {values}{' †' * bool(t.edges)} |"
        )
    lines += [
        "",
        "The exact values: appended to the method's `--methods` entry, they run a grid with them",
        "and no tuning.",
        "",
    ]
    lines += [f"- `{label}`: `{exact_values(t)}`" for label, t in tuned.items()]
    for label, t in tuned.items():
        if t.edges:
            lines.append(f"\n† `{label}`: {'; '.join(t.edges)}; the best may lie beyond it.")
    return lines


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _keys(cells: list[Cell]) -> set[str]:
    return {k for c in cells for m in c.runs for k in m}


def _tasks(cells: list[Cell]) -> list[str]:
    """The tasks the runs were evaluated on: `eval/<task>/avg_target` metrics."""
    keys = _keys(cells)
    return sorted(
        k.split("/")[1] for k in keys if k.startswith("eval/") and k.endswith("/avg_target")
    )


def _runs_table(cells: list[Cell], tasks: list[str]) -> list[str]:
    header = ["method", "setting", "seed", "MLflow run", *tasks, "stages s", "train s", "wall s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in cells:
        for seed, (run_id, m) in enumerate(zip(c.run_ids, c.runs, strict=True)):
            scores = [m.get(f"eval/{t}/avg_target") for t in tasks]
            row = [f"`{c.method}`", c.setting, str(seed), f"`{run_id[:12]}`"]
            row += ["-" if v is None else f"{v:.1f}" for v in scores]
            row += [f"{m.get(k, 0):.0f}" for k in ("time/stages_s", "time/train_s", "time/wall_s")]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def plot(cells: list[Cell], stem: Path) -> list[tuple[str, Path]]:
    """Two figures beside the report: each method's average target score per setting and task
    (mean and standard deviation over seeds), and its score on every target pair."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    keys = _keys(cells)
    tasks = _tasks(cells)
    settings = list(dict.fromkeys(c.setting for c in cells))
    methods = list(dict.fromkeys(c.method for c in cells))
    width = 0.8 / len(methods)
    seeds = seeds_text([len(c.runs) for c in cells])
    figure, axes = pyplot.subplots(
        1, len(tasks), figsize=(max(5.0, 1.2 * len(settings) * len(methods) ** 0.5) * len(tasks),
                                4.4), squeeze=False,
    )  # fmt: skip
    for ax, task in zip(axes[0], tasks, strict=True):
        for i, method in enumerate(methods):
            means, errors = [], []
            for setting in settings:
                values = next(
                    (c.values(f"eval/{task}/avg_target") for c in cells
                     if (c.method, c.setting) == (method, setting)), [],
                )  # fmt: skip
                means.append(statistics.fmean(values) if values else float("nan"))
                errors.append(statistics.stdev(values) if len(values) > 1 else 0.0)
            positions = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(settings))]
            ax.bar(positions, means, width, yerr=errors, capsize=2, label=method)
        ax.set_xticks(range(len(settings)), settings, fontsize=9)
        ax.set_title(f"{task}: average target score, mean ± sd over {seeds}", fontsize=10)
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    paths = [("average target score per task", stem.with_name(f"{stem.name}-targets.png"))]
    figure.savefig(paths[0][1], dpi=110)
    pyplot.close(figure)

    rows = [(s, t) for s in settings for t in tasks]
    figure, axes = pyplot.subplots(len(rows), 1, figsize=(10, 3.0 * len(rows)), squeeze=False)
    for ax, (setting, task) in zip(axes[:, 0], rows, strict=True):
        in_setting = [c for c in cells if c.setting == setting]
        pairs = sorted({p for c in in_setting for p in c.targets if p.startswith(f"{task}/")})
        for i, c in enumerate(in_setting):
            found = [next((k for k in keys if k.startswith(f"eval/{p}/")), "") for p in pairs]
            values = [c.values(k) for k in found]
            x = [j + (i - (len(in_setting) - 1) / 2) * width for j in range(len(pairs))]
            means = [statistics.fmean(v) if v else float("nan") for v in values]
            errors = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
            ax.errorbar(x, means, yerr=errors, fmt="o", markersize=4, capsize=2, label=c.method)
        ax.set_xticks(range(len(pairs)), [p.split("/")[1] for p in pairs], fontsize=9)
        title = f"{setting}, {task}: each target language, mean ± sd over {seeds}"
        ax.set_title(title, fontsize=10)
    axes[0][0].legend(fontsize=8, ncol=min(len(methods), 4))
    figure.tight_layout()
    paths.append(("score per target pair", stem.with_name(f"{stem.name}-pairs.png")))
    figure.savefig(paths[1][1], dpi=110)
    pyplot.close(figure)
    return paths


def _reading(cells: list[Cell], tasks: list[str]) -> list[str]:
    """Per setting and task: the best mean, and whether its lead over the next is larger than
    the standard deviation of either (else the two are not told apart by these seeds; a
    model alone, such as a run average, lends the other's spread). Methods
    whose means tie (to the printed decimal) are named together, none as the best."""
    lines = []
    for setting in dict.fromkeys(c.setting for c in cells):
        for task in tasks:
            key = f"eval/{task}/avg_target"
            scored = [  # one model (one seed, a run average) has no spread: sd None
                (round(statistics.fmean(v), 1), statistics.stdev(v) if len(v) > 1 else None,
                 c.method)
                for c in cells
                if c.setting == setting and (v := c.values(key))
            ]  # fmt: skip
            if len(scored) < 2:
                continue
            scored.sort(key=lambda item: -item[0])
            top = [s for s in scored if s[0] == scored[0][0]]
            if len(top) > 1:
                names = ", ".join(f"`{name}`" for _, _, name in top)
                lines.append(f"- {setting}, {task}: tied at {top[0][0]:.1f}: {names}")
                continue
            (best, best_sd, winner), (second, second_sd, runner_up) = scored[:2]
            lead = best - second
            spread = [sd for sd in (best_sd, second_sd) if sd is not None]
            if not spread:
                verdict = "one model each: no seeds' spread to judge it by"
            else:
                verdict = "clear" if lead > max(spread) else "within the seeds' spread"
            lines.append(
                f"- {setting}, {task}: `{winner}` {best:.1f}, then `{runner_up}` {second:.1f} "
                f"(lead {lead:.1f}: {verdict})"
            )
    return lines
