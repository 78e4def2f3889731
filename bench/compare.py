"""`python -m bench compare`: a grid of methods x settings x seeds on one suite, one table.

Every run is a normal run (one MLflow run each), executed in a fresh process: peak memory is a
per-process high-water mark, so runs sharing a process would inherit each other's peaks. With
`reuse`, a finished run already in the store whose params are exactly those the grid would log
(method, setting, seed, suite, backbone and every option) stands in for a new one: a grid that
was interrupted, or extended by a method, runs only what is missing.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import statistics
from pathlib import Path

from mlflow import MlflowClient

from bench import runner
from bench.report import REPORTS as REPORTS  # where `compare` and `params` write
from bench.report import mean_sd, trained_params
from bench.tracking import param_text, resolve_uri


@dataclasses.dataclass(frozen=True)
class Cell:
    method: str
    setting: str
    runs: tuple[dict[str, float], ...]  # metrics of each seed's run
    run_ids: tuple[str, ...]
    targets: tuple[str, ...] = ()  # the evaluated target pairs, `task/language`

    def values(self, key: str) -> list[float]:
        return [m[key] for m in self.runs if m.get(key) is not None]


def _execute(request: runner.Request) -> tuple[str, dict[str, float]]:
    result = runner.execute(runner.prepare(request))
    return result.run_id, result.metrics


def run_grid(
    methods: list[str],
    settings: list[str],
    seeds: int,
    *,
    suite: str,
    output: Path,
    train: dict,
    plugins: tuple[Path, ...] = (),
    reuse: bool = False,
) -> list[Cell]:
    requests = {
        (method, setting): [
            runner.Request(
                method=method,
                setting=setting,
                suite=suite,
                seed=seed,
                output=output,
                train=train,
                progress=False,
                plugins=plugins,  # loaded again in each run's fresh process
            )
            for seed in range(seeds)
        ]
        for method in methods
        for setting in settings
    }
    plans = {  # every name and value checked before the first run
        cell: runner.prepare(batch[0]).plan for cell, batch in requests.items()
    }
    cells = []
    first = next(iter(requests.values()))[0]
    finished = _finished_runs(output, runner.resolve(first)[0].name) if reuse else {}
    context = multiprocessing.get_context("spawn")
    with context.Pool(1, maxtasksperchild=1) as pool:
        for (method, setting), batch in requests.items():
            results = [
                (finished and finished.get(_key(request))) or pool.apply(_execute, (request,))
                for request in batch
            ]
            plan = plans[(method, setting)]
            targets = [str(e.pair) for m in plan.models for e in m.eval if e.role == "target"]
            cells.append(
                Cell(
                    method,
                    setting,
                    runs=tuple(m for _, m in results),
                    run_ids=tuple(i for i, _ in results),
                    targets=tuple(dict.fromkeys(targets)),
                )
            )
    return cells


def _key(request: runner.Request) -> tuple:
    suite, _, method_config, train, _ = runner.resolve(request)
    params = runner.run_params(request, suite, method_config, train)
    return tuple(sorted((k, param_text(v)) for k, v in params.items()))


def _finished_runs(output: Path, experiment: str) -> dict[tuple, tuple[str, dict[str, float]]]:
    """Params -> (run id, metrics) of the finished runs of a suite in the grid's store."""
    client = MlflowClient(resolve_uri(output, None))
    found_experiment = client.get_experiment_by_name(experiment)
    if found_experiment is None:
        return {}
    found, token = {}, None
    while True:
        page = client.search_runs(
            [found_experiment.experiment_id], "attributes.status = 'FINISHED'", page_token=token
        )
        for run in page:
            key = tuple(sorted(run.data.params.items()))
            found.setdefault(key, (run.info.run_id, dict(run.data.metrics)))
        token = page.token
        if not token:
            return found


def render(
    cells: list[Cell], *, suite: str, command: str, plots: list[tuple[str, Path]] = ()
) -> str:
    tasks = _tasks(cells)
    header = ["method", "setting", *[f"{t} (avg target)" for t in tasks]]
    header += ["trained params", "peak RSS MB", "train s"]
    lines = [
        f"# Methods compared on the {suite} suite",
        "",
        f"Regenerate: `{command}`",
        "",
        "Average target score per task (zero-shot pairs; entity F1 for NER, accuracy otherwise),",
        "mean ± standard deviation over seeds; one MLflow run per seed. *Trained params* counts",
        "what the run trains plus what the method trained before it and froze (MAD-X's language",
        "adapters); *train s* is the run's training loop, without those stages (see below).",
        "Each setting averages over its own targets (mixed trains on more languages, so fewer",
        "pairs are targets, and the unseen task-language combinations among them): compare",
        "methods within a setting.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for c in cells:
        row = [f"`{c.method}`", c.setting]
        row += [mean_sd(c.values(f"eval/{t}/avg_target")) for t in tasks]
        trained = [trained_params(m) for m in c.runs]
        row += [f"{int(statistics.fmean(trained)):,}"]
        row += [f"{statistics.fmean(c.values('memory/peak_rss_mb')):,.0f}"]
        row += [f"{statistics.fmean(c.values('time/train_s')):.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    for setting in dict.fromkeys(c.setting for c in cells):  # fitted on the setting's sources
        first = next(c for c in cells if c.setting == setting).runs[0]
        for name in ("majority", "lookup"):
            values = [first.get(f"reference/{name}/{t}/avg_target") for t in tasks]
            texts = ["-" if v is None else f"{v:.1f}" for v in values]
            lines.append(f"| reference: {name} | {setting} | " + " | ".join(texts) + " | | | |")
    if plots:
        lines += ["", *[f"![{title}]({path.name})" for title, path in plots]]
    staged = [c for c in cells if sum(c.values("stages/trained"))]
    if staged:
        lines += ["", "Stages trained before the runs (then cached and reused by later runs):", ""]
        for c in staged:
            count, seconds = sum(c.values("stages/trained")), sum(c.values("time/stages_s"))
            lines.append(f"- `{c.method}` ({c.setting}): {count:.0f} stages in {seconds:.0f} s")
    lines += ["", "Best method per setting and task (computed):", ""]
    lines += _reading(cells, tasks)
    lines += ["", "Every run (average target score per task; seconds of wall time):", ""]
    lines += _runs_table(cells, tasks)
    return "\n".join(lines) + "\n"


def _keys(cells: list[Cell]) -> set[str]:
    return {k for c in cells for m in c.runs for k in m}


def _tasks(cells: list[Cell]) -> list[str]:
    """The tasks the runs were evaluated on: `eval/<task>/avg_target` metrics."""
    keys = _keys(cells)
    return sorted(k.split("/")[1] for k in keys if k.startswith("eval/") and k.count("/") == 2)


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
    figure, axes = pyplot.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.6), squeeze=False)
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
        ax.set_xticks(range(len(settings)), settings)
        ax.set_title(f"{task}: average target score")
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    paths = [("average target score per task", stem.with_name(f"{stem.name}-targets.png"))]
    figure.savefig(paths[0][1], dpi=110)
    pyplot.close(figure)

    rows = [(s, t) for s in settings for t in tasks]
    figure, axes = pyplot.subplots(len(rows), 1, figsize=(9, 2.6 * len(rows)), squeeze=False)
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
        ax.set_xticks(range(len(pairs)), [p.split("/")[1] for p in pairs])
        ax.set_title(f"{setting}, {task}: each target language", fontsize=9)
    axes[0][0].legend(fontsize=7, ncol=len(methods))
    figure.tight_layout()
    paths.append(("score per target pair", stem.with_name(f"{stem.name}-pairs.png")))
    figure.savefig(paths[1][1], dpi=110)
    pyplot.close(figure)
    return paths


def _reading(cells: list[Cell], tasks: list[str]) -> list[str]:
    """Per setting and task: the best mean, and whether its lead over the next is larger than
    the standard deviation of either (else the two are not told apart by these seeds)."""
    lines = []
    for setting in dict.fromkeys(c.setting for c in cells):
        for task in tasks:
            key = f"eval/{task}/avg_target"
            scored = [
                (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, c.method)
                for c in cells
                if c.setting == setting and (v := c.values(key))
            ]
            if len(scored) < 2:
                continue
            (best, best_sd, winner), (second, second_sd, runner_up) = sorted(scored)[::-1][:2]
            lead = best - second
            verdict = "clear" if lead > max(best_sd, second_sd) else "within the seeds' spread"
            lines.append(
                f"- {setting}, {task}: `{winner}` {best:.1f}, then `{runner_up}` {second:.1f} "
                f"(lead {lead:.1f}: {verdict})"
            )
    return lines
