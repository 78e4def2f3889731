"""Tables of results: printed at the end of `bench run`, and `bench report`, which reads the
runs of one suite and setting back from MLflow and compares the methods with bootstrap intervals
over the test examples (`bench.bootstrap`)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from bench import bootstrap, typology
from bench.bootstrap import Difference, Estimate
from bench.errors import BenchError
from bench.evaluation import PairResult, scored
from bench.suites import Suite
from bench.tracking import (
    LANGUAGE_NOTE,
    NOT_LEARNED,
    STREAM_PARAM,
    Tracker,
    check_store,
    first_line,
    input_params,
)

REFERENCE_ORDER = ("majority", "lookup")
NOT_TRANSFER = "‡"  # a target score not above `transfer_bar`: no evidence of transfer
NOT_TRANSFER_NOTE = (
    f"{NOT_TRANSFER} not above the word-lookup reference (the majority one where there is no "
    "lookup): no evidence of transfer"
)


SERVED_OTHERWISE = "§"  # a language the method served otherwise than the rest (its notes say how)


def transfer_bar(references: Mapping[str, float | None]) -> float | None:
    """What a target score must beat to show transfer: the lookup reference, else the majority."""
    lookup = references.get("lookup")
    return lookup if lookup is not None else references.get("majority")


def marked(score: float, references: Mapping[str, float | None], text: str) -> str:
    """`text` (the score as shown) with `NOT_TRANSFER` when the score does not beat the bar."""
    bar = transfer_bar(references)
    return f"{text} {NOT_TRANSFER}" if bar is not None and score <= bar else text


def results_table(
    results: list[PairResult],
    names: Mapping[str, str] | None = None,
    notes: Mapping[str, str] | None = None,
) -> str:
    """Scores per (task, language), sources first, then targets and their average, with the
    majority-class and word-lookup references beside every score (in percent). Languages the
    method served otherwise (`notes`, from `Model.language_notes`) are marked `SERVED_OTHERWISE`
    and explained below."""
    names, notes = names or {}, notes or {}
    present = {name for r in results for name in r.references}
    refs = [name for name in REFERENCE_ORDER if name in present] + sorted(
        present - set(REFERENCE_ORDER)
    )
    header = ["task", "language", "role", "metric", "score", *refs]
    rows: list[list[str]] = []
    by_task: dict[str, list[PairResult]] = defaultdict(list)
    for r in results:
        by_task[r.task].append(r)
    for task, items in by_task.items():
        items.sort(key=lambda r: (r.role != "source", r.language))
        for r in items:
            language = f"{r.language} {names.get(r.language, '')}".strip()
            language += f" {SERVED_OTHERWISE}" if r.language in notes else ""
            values = [_pct(r.references.get(name)) for name in refs]
            score = _pct(r.score)
            if r.role == "target":
                score = marked(r.score, r.references, score)
            rows.append([task, language, r.role, r.metric, score, *values])
        targets = [r for r in items if r.role == "target"]
        if targets:
            averaged = {
                name: statistics.fmean(r.references[name] for r in targets)
                for name in refs
                if all(name in r.references for r in targets)
            }
            mean = statistics.fmean(r.score for r in targets)
            averages = [_pct(averaged.get(name)) for name in refs]
            rows.append([task, "avg over targets", "", "", marked(mean, averaged, _pct(mean)),
                         *averages])  # fmt: skip
    if any(NOT_TRANSFER in row[4] for row in rows):
        for row in rows:  # the digits stay aligned
            row[4] += "" if NOT_TRANSFER in row[4] else "  "
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [
            cell.rjust(w) if i >= 4 else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    if any(NOT_TRANSFER in row[4] for row in rows):
        lines.append(NOT_TRANSFER_NOTE)
    lines += [f"{SERVED_OTHERWISE} {lang}: {text}" for lang, text in sorted(notes.items())]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


# `bench report`: the runs of one suite and setting, read back from MLflow, with bootstrap CIs.

# Reports go under ./reports of the directory the command runs in (or to --report), never
# beside the installed package: a relative path, resolved when written.
REPORTS = Path("reports")
SWEEP_TAG = "sweep.study"  # Optuna studies tag their parent and trial runs with it
_STAGED = "params/stage_trained"
_CHECK = 1e-6  # recomputed scores further than this from the logged ones are reported


def trained_params(metrics: Mapping[str, float]) -> float:
    """What a run trained: its trainable parameters and those its stages trained before it."""
    return metrics["params/trainable"] + metrics.get(_STAGED, 0)


def trained_seconds(metrics: Mapping[str, float]) -> float:
    """Training time with the stages' own (however they were had): what the method costs."""
    return metrics.get("time/train_s", 0.0) + metrics.get("budget/stage_s", 0.0)


BUDGET = (  # (metric, column) of the budget tables of `report` and `compare`
    ("budget/labelled_steps", "labelled steps"),
    ("budget/mlm_steps", "MLM steps"),
    ("budget/stage_steps", "stage steps"),
    ("budget/labelled_tokens", "labelled tokens"),
    ("budget/mlm_tokens", "MLM tokens"),
    ("budget/stage_tokens", "stage tokens"),
    ("budget/train_flops", "train FLOPs"),
)
_COMPARED = ("budget/labelled_steps", "budget/mlm_steps", "budget/stage_steps",
             "budget/train_flops")  # fmt: skip


def budget_cell(key: str, values: list[float]) -> str:
    """A `BUDGET` column's cell: the mean over seeds (FLOPs to three figures), or "-"."""
    return _mean(values, ".3g" if key.endswith("flops") else ",.0f")


def budgets_compared(
    runs: Mapping[str, list[Mapping[str, float]]], streams: Mapping[str, tuple[str, ...]]
) -> str:
    """In words: whether methods (name -> their runs' metrics, their runs' labelled-stream
    digests by seed) trained on the same labelled batches, and which budgets they share and
    which differ (labelled, MLM and stage steps, train FLOPs: means over seeds)."""
    names = dict(BUDGET)
    same, different = [], []
    for key in _COMPARED:
        means = {m: statistics.fmean(v) for m, rs in runs.items()
                 if (v := [r[key] for r in rs if key in r])}  # fmt: skip
        if not means:
            continue
        low, high = min(means.values()), max(means.values())
        spec = ".3g" if key == "budget/train_flops" else ",.0f"
        if high - low <= 1e-9 * max(1.0, high):
            same.append(f"{names[key]} ({high:{spec}})")
        else:
            least, most = min(means, key=means.get), max(means, key=means.get)
            different.append(
                f"{names[key]} ({low:{spec}} for `{least}` to {high:{spec}} for `{most}`)"
            )
    kinds = set(streams.values())
    if len(kinds) == 1 and all(next(iter(kinds))):
        text = "the same labelled batches"
    elif all(all(s) for s in kinds):
        text = "**different labelled batches**"
    else:
        text = "labelled batches not recorded for every run"
    if same:
        text += "; equal " + ", ".join(same)
    if different:
        text += "; **unequal " + ", ".join(different) + "**"
    return text


def mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}"


@dataclasses.dataclass(frozen=True)
class Sample:
    """One target pair of one method: every seed's per-example counts, on the same examples."""

    metric: str
    gold: str  # a fingerprint of the gold labels: methods are paired where these are equal
    counts: np.ndarray  # (seeds, examples, counts)

    @property
    def point(self) -> float:
        """Mean over seeds of the score on the whole test sample (the logged score)."""
        return float(bootstrap.score(self.metric, self.counts.sum(axis=1)).mean())


@dataclasses.dataclass
class MethodRuns:
    name: str
    runs: list  # mlflow Runs of the kept configuration, one per seed, by seed
    left_out: list[str]  # why other runs of the method were left out, one line each
    samples: dict[str, Sample] = dataclasses.field(default_factory=dict)  # "task/language" ->
    # source pairs: "task/language" -> (metric, each seed's score, the majority reference)
    sources: dict[str, tuple[str, list[float], float | None]] = dataclasses.field(
        default_factory=dict
    )

    @property
    def not_learned(self) -> list[str]:
        """Its runs' `warning.not_learned` tags: source pairs not above the majority."""
        return [r.data.tags[NOT_LEARNED] for r in self.runs if NOT_LEARNED in r.data.tags]

    @property
    def streams(self) -> tuple[str, ...]:
        """Its runs' labelled-stream digests, by seed; a run average's are its seeds' (logged
        joined by `+`), so that it shares the batches its seeds trained on."""
        return tuple(s for r in self.runs for s in r.data.params.get(STREAM_PARAM, "").split("+"))

    def values(self, key: str) -> list[float]:
        return [r.data.metrics[key] for r in self.runs if key in r.data.metrics]

    @property
    def seeds(self) -> list[str]:
        return [r.data.params.get("seed", "?") for r in self.runs]


@dataclasses.dataclass
class Report:
    suite: str
    setting: str
    uri: str
    extra_filter: str | None
    baseline: str
    replicates: int
    methods: list[MethodRuns]  # the baseline first, then by name
    excluded: list[str]  # runs not counted at all, one line each
    estimates: dict[tuple[str, str], Estimate]  # (method, "task/language" or task) ->
    differences: dict[tuple[str, str], Difference | None]  # against the baseline; None: unpaired
    rules: dict[tuple[str, str], Difference | None]  # a rule's row against its source-dev row
    mismatch: float  # the largest |recomputed - logged| score over every run and pair
    # zero-text: each language without text -> (its typologically nearest source, the distance)
    no_text: dict[str, tuple[str, float]] = dataclasses.field(default_factory=dict)

    @property
    def pairs(self) -> list[str]:
        return sorted({p for m in self.methods for p in m.samples})

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(_task(p) for p in self.pairs))

    def pairs_of(self, task: str) -> list[str]:
        return [p for p in self.pairs if p.startswith(f"{task}/")]

    def metric(self, task: str) -> str:
        return next(m.samples[p].metric for m in self.methods for p in m.samples if _in(p, task))

    def references(self, scope: str) -> dict[str, float | None]:
        return {name: self.reference(name, scope) for name in REFERENCE_ORDER}

    def reference(self, name: str, scope: str) -> float | None:
        """A reference score (fitted on the setting's sources: the same for every run)."""
        key = f"{scope}/avg_target" if "/" not in scope else f"{scope}/{self.metric(_task(scope))}"
        return next(
            iter(v for m in self.methods for v in m.values(f"reference/{name}/{key}")), None
        )


def check_writable(path: Path) -> None:
    """Before any work: the report can be written there (its folder exists or can be made)."""
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if (
        path.is_dir()
        or not folder.is_dir()
        or not os.access(folder, os.W_OK)
        or (path.exists() and not os.access(path, os.W_OK))
    ):
        raise BenchError(f"report path {path} is not writable; choose another with --report")


def build(
    uri: str,
    suite: Suite,
    setting: str,
    *,
    baseline: str,
    replicates: int,
    extra_filter: str | None = None,
) -> Report:
    """Everything the report shows, computed: nothing is written."""
    client = _client(uri)
    runs, excluded = _find_runs(client, uri, suite.name, setting, extra_filter)
    baseline = resolve_baseline(runs, baseline)
    methods = _group(runs, baseline)
    mismatch = max(_load_samples(client, method, suite) for method in methods)
    estimates, differences, rules = intervals(methods, baseline, replicates)
    return Report(
        suite.name, setting, uri, extra_filter, baseline, replicates, methods, excluded,
        estimates, differences, rules, mismatch, _nearest_sources(suite, methods) if setting ==
        ZERO_TEXT else {},
    )  # fmt: skip


ZERO_TEXT = "zero-text"


def _nearest_sources(suite: Suite, methods: list[MethodRuns]) -> dict[str, tuple[str, float]]:
    """Each of the suite's languages without text: the source language (trained on with
    labels) nearest to it in typology, and their cosine distance."""
    sources = sorted({p.partition("/")[2] for m in methods for p in m.sources})
    nearest = {}
    for language in suite.no_text:
        own = typology.vector(suite, language)
        distances = {s: typology.distance(own, typology.vector(suite, s)) for s in sources}
        if distances:
            source = min(distances, key=distances.__getitem__)
            nearest[language] = (source, distances[source])
    return nearest


def _client(uri: str) -> MlflowClient:
    check_store(uri, "no runs to report (give the runs' --output folder or --tracking-uri)")
    Tracker.check_reachable(uri)  # a server that does not answer: one line, not minutes of retries
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per run: noise
    return MlflowClient(uri)


def _find_runs(
    client: MlflowClient, uri: str, name: str, setting: str, extra_filter: str | None
) -> tuple[list, list[str]]:
    try:
        experiment = client.get_experiment_by_name(name)
    except Exception as error:  # the store could not be reached or opened
        raise BenchError(f"tracking store {uri} is unusable: {first_line(error)}") from None
    if experiment is None:
        names = ", ".join(e.name for e in client.search_experiments()) or "none"
        raise BenchError(f"no experiment {name!r} in {uri}; experiments there: {names}")
    query = f"attributes.status = 'FINISHED' AND tags.setting = '{setting}'"
    try:
        found = _search(client, experiment.experiment_id, query, extra_filter)
    except MlflowException as error:
        raise BenchError(f"--filter {extra_filter!r} is invalid: {first_line(error)}") from None
    runs = _counted(found)
    if not runs:
        finished = _search(client, experiment.experiment_id, "attributes.status = 'FINISHED'")
        settings = sorted({r.data.tags.get("setting", "") for r in _counted(finished)} - {""})
        matching = f" matching --filter {extra_filter!r}" if extra_filter else ""
        sweeps = sum(SWEEP_TAG in r.data.tags for r in found)
        tuning = (
            f": it holds only tuning runs ({_runs(sweeps)} tagged `{SWEEP_TAG}`), which reports "
            "leave out; run the best values with `bench run` or `bench compare --seeds N`"
            if sweeps
            else ""
        )
        raise BenchError(
            f"no finished runs of setting {setting!r}{matching} in experiment {name!r} of {uri}"
            f"{tuning}; settings with finished runs that reports count: "
            f"{', '.join(settings) or 'none'}"
        )
    excluded = []
    if sweeps := sum(SWEEP_TAG in r.data.tags for r in found):
        excluded.append(
            f"{_runs(sweeps)} tagged `{SWEEP_TAG}` (Optuna studies and their trials: tuning "
            "runs, not the grid)"
        )
    if untagged := len(found) - len(runs) - sweeps:
        excluded.append(f"{_runs(untagged)} without a `method` tag (not written by `bench run`)")
    return runs, excluded


def _counted(runs: list) -> list:
    """The runs reports count: written by `bench run` (a `method` tag), not tuning runs."""
    return [r for r in runs if SWEEP_TAG not in r.data.tags and "method" in r.data.tags]


def _search(client: MlflowClient, experiment_id: str, query: str, extra: str | None = None):
    query += f" AND {extra}" if extra else ""
    found, token = [], None
    while True:
        page = client.search_runs([experiment_id], query, page_token=token)
        found += page
        token = page.token
        if not token:
            return found


def resolve_baseline(runs: list, baseline: str) -> str:
    """`baseline` as the runs name it: a method named without `[bf16]` is its bf16 runs where
    it has only those (`hyperx` is `hyperx [bf16]` on a suite that trains in bf16)."""
    labels = {label(run) for run in runs}
    bf16 = f"{baseline} [bf16]"
    return bf16 if baseline not in labels and bf16 in labels else baseline


def label(run) -> str:
    """A run's method as reports name it: its `variant` tag (`adapter (mlm)`), else `method`,
    and its selection rule where it is not source dev (`hyperx [average]`), that it averages
    the weights of several seeds' runs (`hyperx [run average]`), or that it ran under bfloat16
    (`hyperx [bf16]`)."""
    name = run.data.tags.get("variant") or run.data.tags["method"]
    rules = [run.data.params.get("train.selection", "source-dev")]
    rules = [r for r in rules if r != "source-dev"]
    rules += ["run average"] * ("run_average" in run.data.tags)
    rules += ["bf16"] * (run.data.params.get("train.precision") == "bf16")
    return f"{name} [{', '.join(rules)}]" if rules else name


def _group(runs: list, baseline: str) -> list[MethodRuns]:
    """Runs by their method's variant (`label`). Of a method's configurations (its params
    other than the seed), the one with the newest run is kept; of a seed run more than once,
    the newest run."""
    by_method: dict[str, list] = defaultdict(list)
    for run in sorted(runs, key=lambda r: r.info.start_time):
        by_method[label(run)].append(run)
    methods = []

    def order(name: str) -> tuple:  # the baseline's rows first; a method's rows together,
        base = name.partition(" [")[0]  # its own first: `adapter [bf16]`, `adapter [average,
        rule = rule_of(name) is not None  # bf16]`, ..., `adapter (mlm) [bf16]`
        return (base != baseline.partition(" [")[0], name != baseline, base, rule, name)

    for name in sorted(by_method, key=order):
        configs: dict[tuple, list] = defaultdict(list)
        for run in by_method[name]:
            params = input_params(run.data.params).items()  # the seeds of one configuration:
            configs[tuple(sorted((k, v) for k, v in params if k != "seed"))].append(run)
        kept = list(configs)[-1]  # runs are in order of start: the newest run's configuration
        left_out = [
            f"{_runs(len(older))} of an older configuration ({_differences(dict(c), dict(kept))})"
            for c, older in configs.items()
            if c != kept
        ]
        by_seed = {r.data.params.get("seed", "?"): r for r in configs[kept]}  # the newest wins
        if again := len(configs[kept]) - len(by_seed):
            left_out.append(f"{_runs(again)} of a seed that was run again later (the newest kept)")
        seeds = sorted(by_seed, key=lambda s: (len(s), s))
        methods.append(MethodRuns(name, [by_seed[s] for s in seeds], left_out))
    return methods


def _differences(older: dict[str, str], kept: dict[str, str]) -> str:
    keys = sorted(k for k in older.keys() | kept.keys() if older.get(k) != kept.get(k))
    texts = [f"`{k}` {older.get(k, 'unset')} where the kept runs have {kept.get(k, 'unset')}"
             for k in keys[:4]]  # fmt: skip
    return "; ".join(texts) + (f"; {len(keys) - 4} more params differ" if len(keys) > 4 else "")


def _load_samples(client: MlflowClient, method: MethodRuns, suite: Suite) -> float:
    """Read each run's per-example predictions (`results.json`) into the method's samples; the
    largest difference between a recomputed and a logged score."""
    found: dict[str, list[tuple[str, str, np.ndarray]]] = defaultdict(list)
    mismatch = 0.0
    with tempfile.TemporaryDirectory() as folder:
        for run in method.runs:
            for pair in _results(client, run, folder)["pairs"]:
                if pair["role"] == "source":
                    name = f"{pair['task']}/{pair['language']}"
                    _, scores, _ = method.sources.setdefault(
                        name, (pair["metric"], [], pair["references"].get("majority"))
                    )
                    scores.append(pair["score"])
                if pair["role"] != "target":
                    continue
                predictions = scored(pair["predictions"], suite.task(pair["task"]).labels)
                counts = bootstrap.counts(pair["metric"], pair["gold"], predictions)
                score = bootstrap.score(pair["metric"], counts.sum(axis=0))
                mismatch = max(mismatch, abs(float(score) - pair["score"]))
                gold = hashlib.sha256(json.dumps(pair["gold"]).encode()).hexdigest()
                found[f"{pair['task']}/{pair['language']}"].append((pair["metric"], gold, counts))
    for name, entries in sorted(found.items()):
        metrics, golds, counts = zip(*entries, strict=True)
        if len(entries) != len(method.runs) or len(set(golds)) > 1:
            raise BenchError(
                f"the runs of {method.name} evaluated {name} on different examples, so their "
                "seeds cannot be pooled; leave some out with --filter"
            )
        method.samples[name] = Sample(metrics[0], golds[0], np.stack(counts))
    return mismatch


def _results(client: MlflowClient, run, folder: str) -> dict:
    try:
        path = client.download_artifacts(run.info.run_id, "results.json", folder)
    except Exception as error:  # no such artifact, or the artifact store cannot be read
        raise BenchError(
            f"run {run.info.run_id} ({run.data.tags['method']}) has no readable results.json: "
            f"{first_line(error)}"
        ) from None
    return json.loads(Path(path).read_text())


def intervals(
    methods: list[MethodRuns], baseline: str, replicates: int
) -> tuple[
    dict[tuple[str, str], Estimate],
    dict[tuple[str, str], Difference | None],
    dict[tuple[str, str], Difference | None],
]:
    """Per method and target pair (and task: the mean over its pairs), the score's interval; per
    other method, its difference from the baseline; per selection rule's row (`adapter
    [average]`), its difference from its own method's source-dev row (`adapter`). One replicate
    draws each pair's examples again, independently of the other pairs, and applies the draw to
    every seed and method evaluated on those examples."""
    rng = np.random.default_rng(0)
    draws: dict[tuple[str, str], np.ndarray] = {}
    points: dict[tuple[str, str], float] = {}
    for pair in sorted({p for m in methods for p in m.samples}):
        samples = {m.name: m.samples[pair] for m in methods if pair in m.samples}
        for gold in dict.fromkeys(s.gold for s in samples.values()):
            same = {name: s for name, s in samples.items() if s.gold == gold}
            examples = next(iter(same.values())).counts.shape[1]
            weights = bootstrap.multiplicities(rng, examples, replicates)
            for name, s in same.items():
                draws[(name, pair)] = bootstrap.replicate_scores(s.metric, weights, s.counts)
                points[(name, pair)] = s.point
    for m in methods:
        for task in dict.fromkeys(_task(p) for p in m.samples):
            scope = [(m.name, p) for p in m.samples if _in(p, task)]
            draws[(m.name, task)] = np.mean([draws[k] for k in scope], axis=0)
            points[(m.name, task)] = statistics.fmean(points[k] for k in scope)
    estimates = {key: Estimate.of(points[key], draws[key]) for key in draws}
    by_name = {m.name: m for m in methods}

    def against(m: MethodRuns, other: MethodRuns) -> dict[tuple[str, str], Difference | None]:
        found: dict[tuple[str, str], Difference | None] = {}
        for key in [k for k in draws if k[0] == m.name]:
            scope = key[1]
            golds = [{p: s.gold for p, s in x.samples.items() if _in(p, scope)} for x in (m, other)]
            if golds[0] != golds[1]:  # not the same pairs on the same examples
                found[key] = None
                continue
            theirs = (other.name, scope)
            found[key] = Difference.of(points[key] - points[theirs], draws[key] - draws[theirs])
        return found

    base = by_name.get(baseline)
    differences: dict[tuple[str, str], Difference | None] = {}
    rules: dict[tuple[str, str], Difference | None] = {}
    for m in methods:
        if base and m is not base:
            differences |= against(m, base)
        if (rule := rule_of(m.name)) and rule[0] in by_name:
            rules |= against(m, by_name[rule[0]])
    return estimates, differences, rules


RULES = ("last", "average", "run average")  # the bracketed words of `label` that name a rule


def rule_of(name: str) -> tuple[str, str] | None:
    """A row that tests other weights of a method's trainings than its source-dev choice
    (`adapter (mlm) [average, bf16]`): that method's own row (`adapter (mlm) [bf16]`) and the
    rule (`average`); None for a source-dev row."""
    base, _, rest = name.partition(" [")
    words = rest.removesuffix("]").split(", ") if rest else []
    rules = [w for w in words if w in RULES]
    if not rules:
        return None
    others = [w for w in words if w not in RULES]
    return base + (f" [{', '.join(others)}]" if others else ""), ", ".join(rules)


def _runs(count: int) -> str:
    return f"{count} run" + "s" * (count != 1)


def _task(scope: str) -> str:
    return scope.split("/")[0]


def _in(pair: str, scope: str) -> bool:
    """Whether a target pair is, or belongs to, a scope: a pair, or a task."""
    return pair == scope or pair.startswith(f"{scope}/")


def save(report: Report, path: Path, command: str) -> str:
    """Draw the figures and write them beside the markdown report; returns the markdown."""
    images = figures(report)
    names = {kind: f"{path.stem}-{kind}.png" for kind in images}
    text = render(report, command, names)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for kind, png in images.items():
            (path.parent / names[kind]).write_bytes(png)
        path.write_text(text)
    except OSError as error:
        raise BenchError(f"report path {path} is not writable: {error.strerror}") from None
    return text


def render(report: Report, command: str, figure_names: Mapping[str, str]) -> str:
    r, tasks = report, report.tasks
    runs = ", ".join(
        f"`{m.name}` {len(m.runs)} (seed{'s' * (len(m.runs) > 1)} {', '.join(m.seeds)})"
        for m in r.methods
    )
    matching = f" and matching {_code(r.extra_filter)}" if r.extra_filter else ""
    lines = [
        f"# The {r.suite} suite, {r.setting} setting: methods compared",
        "",
        f"Regenerate: {_code(command)}",
        "",
        f"Read from `{r.uri}`, experiment `{r.suite}`: the finished runs tagged `setting` = "
        f"`{r.setting}`{matching}, grouped by method (the `variant` tag). Runs per method: {runs}.",
    ]
    left_out = [f"- {line}" for line in r.excluded]
    left_out += [f"- `{m.name}`: {line}" for m in r.methods for line in m.left_out]
    if left_out:
        lines += ["", "Left out:", "", *left_out]
    lines += [
        "",
        f"![Score per method and target pair]({figure_names['heatmap']})",
        "",
        f"![Average target score against trained parameters]({figure_names['params']})",
        "",
        "## Average target score per task",
        "",
        "Zero-shot target pairs; entity F1 for NER, accuracy otherwise. Mean ± standard deviation",
        f"over seeds, then the {bootstrap.LEVEL}% bootstrap interval over test examples (see the",
        "end). *Trained params* counts what the run trains plus what the method trained before",
        "it and froze (MAD-X's language adapters); *train s* the run's training plus the time",
        "its stages took to train, whether in this run or in the one whose cache it reused.",
        "A † marks a method with a run that did not learn (see *Source pairs*), a ‡ a target",
        "score not above the word-lookup reference (the majority one where there is no lookup),",
        "here and per target pair: no evidence of transfer.",
        "",
    ]
    lines += _summary_table(r, tasks)
    if r.no_text:
        lines += ["", "## Languages with no text", "", *ZERO_TEXT_NOTE, ""]
        lines += _no_text_table(r, tasks)
    lines += ["", "## Budgets", "", "What each method trained on, mean over seeds (see the",
              "README's *Budgets*): steps of labelled, MLM and stage batches and the measured",
              "training FLOPs (stages included).", ""]  # fmt: skip
    lines += _budget_table(r)
    runs = {m.name: [x.data.metrics for x in m.runs] for m in r.methods}
    lines += ["", f"Compared: {budgets_compared(runs, {m.name: m.streams for m in r.methods})}."]
    lines += ["", "## Source pairs", "", "Test score on the source pairs (trained on with",
              "labels), mean ± sd over seeds, beside the majority reference. A model that does",
              "not beat it did not learn its own training pairs; such runs are tagged",
              f"`{NOT_LEARNED}`.", ""]  # fmt: skip
    lines += _source_table(r)
    tuned = [f"`{m.name}`: study `{t}`" for m in r.methods
             if (t := m.runs[0].data.tags.get("tune.study"))]  # fmt: skip
    if tuned:
        lines += ["", "Tuned (`bench compare --tune`): " + "; ".join(tuned) + "."]
    lines += ["", "## Per target pair", "", f"Mean over seeds [{bootstrap.LEVEL}% interval].", ""]
    lines += _pairs_table(r, tasks)
    lines += ["", f"## Against `{r.baseline}`, paired", ""]
    if not any(m.name == r.baseline for m in r.methods):
        others = ", ".join(m.name for m in r.methods)
        lines.append(
            f"`{r.baseline}` has no runs here: no paired comparison (--baseline: {others})."
        )
    else:
        lines += [
            f"Each method minus `{r.baseline}`, both scored on the same resampled examples in",
            "every replicate. *Win rate*: the share of replicates in which the method scores",
            "higher (ties count half). *Better* or *worse* when the interval of the difference",
            "excludes 0. *Not paired*: the two were evaluated on different examples.",
            "",
        ]
        lines += _differences_table(r, tasks)
    if r.rules:
        lines += ["", "## Selection rules", "", *RULES_TEXT, ""]
        lines += _rules_table(r, tasks)
    if any(m.values(f"oracle/{t}/avg_target") for m in r.methods for t in tasks):
        lines += ["", ORACLE_HEADING, "", *ORACLE_TEXT, ""]
        lines += _oracle_table(r, tasks)
        if "selection" in figure_names:
            lines += ["", f"![Source dev against target dev]({figure_names['selection']})"]
    lines += ["", "## Reading (computed)", "", *_reading(r, tasks)]
    lines += ["", "## How the intervals are computed", "", *_method_note(r)]
    return "\n".join(lines) + "\n"


def _summary_table(r: Report, tasks: list[str]) -> list[str]:
    gpu = any(m.values("memory/peak_gpu_mb") for m in r.methods)
    header = ["method", "runs", *[f"{t} {r.metric(t)} (avg target)" for t in tasks]]
    header += ["trained params", "peak RSS MB", *(["peak GPU MB"] * gpu), "train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in r.methods:
        row = [f"`{m.name}`" + " †" * bool(m.not_learned), str(len(m.runs))]
        for task in tasks:
            estimate = r.estimates.get((m.name, task))
            interval = f" {_interval(estimate)}" if estimate else ""
            values = m.values(f"eval/{task}/avg_target")
            text = mean_sd(values) + interval
            row.append(
                marked(statistics.fmean(values), r.references(task), text) if values else text
            )
        row.append(f"{statistics.fmean(trained_params(x.data.metrics) for x in m.runs):,.0f}")
        keys = ["memory/peak_rss_mb", *(["memory/peak_gpu_mb"] * gpu)]
        row += [_mean(m.values(k), ".0f") for k in keys]
        row.append(_mean([trained_seconds(x.data.metrics) for x in m.runs], ".1f"))
        lines.append("| " + " | ".join(row) + " |")
    for name in REFERENCE_ORDER:
        row = [f"reference: {name}", "", *[_pct(r.reference(name, t)) for t in tasks]]
        lines.append("| " + " | ".join(row + [""] * (len(header) - len(row))) + " |")
    return lines


ORACLE_HEADING = "## Oracle bound: selected on target dev data, not zero-shot"
ORACLE_TEXT = [
    "Runs with `--oracle` also scored every checkpoint on the dev split of each target pair that",
    "has one; each such pair is then tested with the checkpoint its own dev split picked. These",
    "columns read target labels: an upper bound on what source-dev selection could reach, never",
    "a zero-shot result (Keung et al., 2020). *Zero-shot* is the run's own score on the same",
    "pairs. *Spearman*: the rank correlation, over a model's checkpoints, of its source dev score",
    "with its mean target dev score; *gap*: the mean target dev score the source-dev choice gives",
    "up against the best checkpoint. Mean ± sd over the runs that logged them.",
]


def _oracle_table(r: Report, tasks: list[str]) -> list[str]:
    header = ["method"]
    for t in tasks:
        header += [f"{t} zero-shot", f"{t} oracle (target dev)"]
    header += ["Spearman", "gap"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in r.methods:
        if not any(m.values(f"oracle/{t}/avg_target") for t in tasks):
            continue
        row = [f"`{m.name}`"]
        for task in tasks:
            zero, oracle = [], []
            for run in m.runs:
                pairs = _oracle_pairs(run.data.metrics, task)
                if pairs:
                    zero.append(statistics.fmean(run.data.metrics[f"eval/{p}"] for p in pairs))
                    oracle.append(run.data.metrics[f"oracle/{task}/avg_target"])
            count = len(_oracle_pairs(m.runs[0].data.metrics, task))
            row += [mean_sd(zero), f"{mean_sd(oracle)} ({count} pairs)" if oracle else "-"]
        row += [
            _mean(_per_model(m, "spearman"), ".2f"),
            _mean(_per_model(m, "selection_gap"), ".1f"),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


RULES_TEXT = [
    "The weights each row tests, of the same trainings: a method's own row tests the checkpoint",
    "with the best source dev score (*source-dev*); *last* the final weights; *average* the",
    "uniform average of the weights at every evaluation point (Schmidt et al., 2023); *run",
    "average* one model averaged from the seeds' weights. Average target score, mean ± sd over",
    "seeds (one model for a run average), then in parentheses the paired difference from the",
    "method's source-dev row and its interval, on the same resampled examples (≈ where the",
    "interval includes 0). None of these reads target labels; the oracle below does.",
]


def _rules_table(r: Report, tasks: list[str]) -> list[str]:
    header = ["method", "rule", *[f"{t} {r.metric(t)} (avg target)" for t in tasks]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    by_name = {m.name: m for m in r.methods}
    bases = [m for m in r.methods if any(rule_of(n) and rule_of(n)[0] == m.name for n in by_name)]
    for base in bases:
        rows = [(base, "source-dev")]
        rows += [
            (m, rule[1]) for m in r.methods if (rule := rule_of(m.name)) and rule[0] == base.name
        ]
        for m, rule in rows:
            row = [f"`{base.name}`" if m is base else "", rule]
            for task in tasks:
                text = mean_sd(m.values(f"eval/{task}/avg_target"))
                if m is base and (estimate := r.estimates.get((m.name, task))):
                    text += f" {_interval(estimate)}"
                elif (d := r.rules.get((m.name, task))) is not None:
                    sign = "≈ " if d.verdict == "not distinguishable" else ""
                    text += f" ({sign}{d.estimate.point:+.1f} {_interval(d.estimate)})"
                row.append(text)
            lines.append("| " + " | ".join(row) + " |")
    return lines


def _oracle_pairs(metrics: Mapping[str, float], task: str) -> list[str]:
    """The target pairs the oracle scored: "task/language/metric", as `eval/` logs them."""
    return sorted(
        key.removeprefix("oracle/")
        for key in metrics
        if key.startswith(f"oracle/{task}/") and key.count("/") == 3
    )


def _per_model(m: MethodRuns, name: str) -> list[float]:
    """A selection statistic of every model of every run (single-task trains one per task)."""
    return [
        value
        for run in m.runs
        for key, value in run.data.metrics.items()
        if key.startswith("oracle/") and key.endswith(f"/{name}")
    ]


def _budget_table(r: Report) -> list[str]:
    header = ["method", *[name for _, name in BUDGET]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in r.methods:
        row = [f"`{m.name}`"]
        for key, _ in BUDGET:
            row.append(budget_cell(key, m.values(key)))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _source_table(r: Report) -> list[str]:
    pairs = sorted({p for m in r.methods for p in m.sources})
    header = ["pair", "metric", *[f"`{m.name}`" for m in r.methods], "majority"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for pair in pairs:
        found = [m.sources[pair] for m in r.methods if pair in m.sources]
        metric, _, majority = found[0]
        row = [pair, metric]
        for m in r.methods:
            if pair not in m.sources:
                row.append("-")
                continue
            scores = m.sources[pair][1]
            failed = majority is not None and statistics.fmean(scores) <= majority
            row.append(mean_sd(scores) + " †" * failed)
        row.append(_pct(majority))
        lines.append("| " + " | ".join(row) + " |")
    for m in r.methods:
        for text in m.not_learned:
            lines.append(f"\n† `{m.name}`, a run did not learn: {text}")
    return lines


ZERO_TEXT_NOTE = [
    "The suite's `no_text` languages had neither labels nor MLM text in this setting: each",
    f"method served them as its notes say ({SERVED_OTHERWISE}). Mean over seeds",
    f"[{bootstrap.LEVEL}% interval], beside the cosine distance between the language's",
    "typological vector (URIEL's, or the suite's own) and that of the nearest source language",
    "(0: the same typology).",
]


def _no_text_table(r: Report, tasks: list[str]) -> list[str]:
    header = ["pair", "nearest source (distance)", *[f"`{m.name}`" for m in r.methods]]
    header += list(REFERENCE_ORDER)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for pair in (p for t in tasks for p in r.pairs_of(t)):
        language = pair.partition("/")[2]
        if language not in r.no_text:
            continue
        source, distance = r.no_text[language]
        row = [pair, f"{source} ({distance:.3f})"]
        for m in r.methods:
            estimate = r.estimates.get((m.name, pair))
            text = f"{estimate.point:.1f} {_interval(estimate)}" if estimate else "-"
            row.append(marked(estimate.point, r.references(pair), text) if estimate else text)
        row += [_pct(r.reference(name, pair)) for name in REFERENCE_ORDER]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _pairs_table(r: Report, tasks: list[str]) -> list[str]:
    header = ["pair", "metric", *[f"`{m.name}`" for m in r.methods], *REFERENCE_ORDER]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for pair in (p for t in tasks for p in r.pairs_of(t)):
        row = [pair, r.metric(_task(pair))]
        for m in r.methods:
            estimate = r.estimates.get((m.name, pair))
            text = f"{estimate.point:.1f} {_interval(estimate)}" if estimate else "-"
            text = marked(estimate.point, r.references(pair), text) if estimate else text
            served = _language_notes(m).get(pair.partition("/")[2])
            row.append(f"{text} {SERVED_OTHERWISE}" if served and estimate else text)
        row += [_pct(r.reference(name, pair)) for name in REFERENCE_ORDER]
        lines.append("| " + " | ".join(row) + " |")
    for m in r.methods:
        notes = _language_notes(m)
        lines += [f"\n{SERVED_OTHERWISE} `{m.name}`, {lang}: {notes[lang]}" for lang in notes]
    return lines


def language_notes(tags: list[dict[str, str]]) -> dict[str, str]:
    """Language -> how the method served it (`Model.language_notes`), from runs' tags."""
    found = {
        key.removeprefix(LANGUAGE_NOTE): value
        for run_tags in tags
        for key, value in run_tags.items()
        if key.startswith(LANGUAGE_NOTE)
    }
    return dict(sorted(found.items()))


def _language_notes(m: MethodRuns) -> dict[str, str]:
    return language_notes([run.data.tags for run in m.runs])


def _differences_table(r: Report, tasks: list[str]) -> list[str]:
    header = ["method", "scope", f"difference from `{r.baseline}`", "interval", "win rate"]
    lines = ["| " + " | ".join([*header, "verdict"]) + " |", "|" + "---|" * (len(header) + 1)]
    for m in r.methods:
        for scope in (s for t in tasks for s in (t, *r.pairs_of(t))):
            if (m.name, scope) not in r.differences:
                continue
            label = f"**{scope}** (avg target)" if scope in tasks else scope
            row = [f"`{m.name}`", label]
            if (d := r.differences[(m.name, scope)]) is None:
                row += ["", "", "", "not paired"]
            else:
                row += [f"{d.estimate.point:+.1f}", _interval(d.estimate), f"{d.win_rate:.2f}"]
                row.append(d.verdict)
            lines.append("| " + " | ".join(row) + " |")
    return lines


def _reading(r: Report, tasks: list[str]) -> list[str]:
    """Per task: the highest mean and its interval, the verdicts against the baseline, the
    methods whose whole interval lies above the better reference, and those whose seeds vary
    more than their test sample does."""
    lines = []
    for task in tasks:
        ranked = [(r.estimates[(m.name, task)], m) for m in r.methods
                  if (m.name, task) in r.estimates]  # fmt: skip
        best = max(ranked, key=lambda item: item[0].point)[0]
        tied = [m for e, m in ranked if round(e.point, 1) == round(best.point, 1)]
        # a rule's row that ties with its method's own (`last` where source dev picked the
        # last checkpoint) is the same model, not a rival
        tied_names = {m.name for m in tied}
        same = [m for m in tied if (rule_of(m.name) or ("",))[0] in tied_names]
        tied = [m for m in tied if m not in same]
        if len(tied) > 1:
            names = ", ".join(f"`{m.name}`" for m in tied)
            text = f"- {task}: no highest mean, {names} tie at {best.point:.1f}"
        else:
            winner = tied[0]
            best = r.estimates[(winner.name, task)]
            text = f"- {task}: highest mean `{winner.name}` {best.point:.1f} {_interval(best)}"
        if same:
            text += f" (so do {', '.join(f'`{m.name}`' for m in same)}, of the same training)"
        verdicts: dict[str, list[str]] = defaultdict(list)
        for (name, scope), d in r.differences.items():
            if scope == task:
                verdicts["not paired" if d is None else d.verdict].append(f"`{name}`")
        if verdicts:
            parts = [f"{v} {', '.join(names)}" for v, names in sorted(verdicts.items())]
            text += f"; against `{r.baseline}`: " + "; ".join(parts)
        references = [(v, n) for n in REFERENCE_ORDER if (v := r.reference(n, task)) is not None]
        if references:
            value, name = max(references)
            above = [f"`{m.name}`" for e, m in ranked if e.low > value] or ["none"]
            text += f". Interval wholly above the {name} reference ({value:.1f}): "
            text += ", ".join(above)
        spread = [
            f"`{m.name}`" for e, m in ranked
            if len(v := m.values(f"eval/{task}/avg_target")) > 1
            and statistics.stdev(v) > (e.high - e.low) / 2
        ]  # fmt: skip
        if spread:
            text += (
                f". The sd over seeds exceeds the interval's half-width for {', '.join(spread)}: "
                "comparisons with them describe these seeds' models; other seeds may differ"
            )
        lines.append(text + ".")
    return lines


def _method_note(r: Report) -> list[str]:
    tail = (100 - bootstrap.LEVEL) / 2
    if r.mismatch <= _CHECK:
        check = f"reproduces every logged score (largest difference {r.mismatch:.0e})"
    else:
        check = (
            f"**differs from the logged scores by up to {r.mismatch:.2g}**: the intervals may "
            "not describe them"
        )
    return [
        "Each run's `results.json` holds every test example's prediction and gold label. Scoring",
        f"them again as per-example counts {check}. A bootstrap replicate draws each target",
        "pair's test examples again with replacement, independently of the other pairs, and",
        "scores every seed's run of every method on that same draw; a method's replicate score",
        "is the mean over its seeds, a task's the mean over its target pairs.",
        f"{r.replicates} replicates (numpy `default_rng(0)`: the report is reproducible); the",
        f"intervals are their {tail:g}th and {100 - tail:g}th percentiles.",
        "",
        "An interval says how much a score depends on which test examples were drawn, for these",
        "trained models. It does not cover training: the ± over seeds does that, and with a few",
        "seeds only roughly. Neither covers the choice of hyperparameters or budget.",
    ]


def _code(text: str) -> str:
    """Inline code that may hold backticks itself (an MLflow filter)."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _interval(estimate: Estimate) -> str:
    return f"[{estimate.low:.1f}, {estimate.high:.1f}]"


def _mean(values: list[float], spec: str) -> str:
    return format(statistics.fmean(values), spec) if values else "-"


def figures(report: Report) -> dict[str, bytes]:
    """PNGs: a heatmap of the scores per method and target pair, and each task's average target
    score against the trained parameters."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    images = {}
    drawn = [("heatmap", _heatmap), ("params", _params_plot)]
    if any(_per_model(m, "selection_gap") for m in report.methods):
        drawn.append(("selection", _selection_plot))
    for kind, draw in drawn:
        figure = draw(report, pyplot)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
        pyplot.close(figure)
        images[kind] = buffer.getvalue()
    return images


_SPAN = 10.0  # the params plot's y axis covers at least this many points


def seeds_text(counts: list[int]) -> str:
    """What a figure's values average over: "3 seeds", "1 seed", or "1-3 seeds"."""
    low, high = min(counts), max(counts)
    return f"{low if low == high else f'{low}-{high}'} seed{'s' * (high > 1)}"


def _heatmap(r: Report, pyplot):
    """Each task on one scale a reader cannot misread: from the lowest majority reference of its
    pairs (or its lowest score, if lower) to 100, with a colour bar that marks the task's average
    majority and lookup references."""
    tasks, names = r.tasks, [m.name for m in r.methods]
    widths = [len(r.pairs_of(t)) + 0.6 for t in tasks]  # room for each task's colour bar
    figure, axes = pyplot.subplots(
        1, len(tasks), squeeze=False, gridspec_kw={"width_ratios": widths},
        figsize=(2.2 + 1.05 * sum(widths), 1.9 + 0.5 * len(names)),
    )  # fmt: skip
    colours = pyplot.get_cmap("viridis").with_extremes(bad="lightgrey")
    for i, (ax, task) in enumerate(zip(axes[0], tasks, strict=True)):
        pairs = r.pairs_of(task)
        values = np.array(
            [[e.point if (e := r.estimates.get((n, p))) else np.nan for p in pairs] for n in names]
        )
        majority = [v for p in pairs if (v := r.reference("majority", p)) is not None]
        low = min([*majority, float(np.nanmin(values))]) if majority else float(np.nanmin(values))
        low, high = min(low, 90.0), 100.0
        image = ax.imshow(
            np.ma.masked_invalid(values), cmap=colours, vmin=low, vmax=high, aspect="auto"
        )
        for (row, column), value in np.ndenumerate(values):
            light = np.isnan(value) or (value - low) / (high - low) > 0.55
            text = "-" if np.isnan(value) else f"{value:.1f}"
            ax.text(column, row, text, ha="center", va="center", fontsize=10,
                    color="black" if light else "white")  # fmt: skip
        ax.set_xticks(range(len(pairs)), [p.split("/")[1] for p in pairs], fontsize=10)
        ax.set_yticks(range(len(names)), names if i == 0 else [], fontsize=10)
        ax.tick_params(length=0)
        ax.set_title(f"{task} ({r.metric(task)})", fontsize=11)
        bar = figure.colorbar(image, ax=ax, fraction=0.08, pad=0.03)
        bar.ax.tick_params(labelsize=8)
        for name, style in zip(REFERENCE_ORDER, (":", "--"), strict=True):
            if (value := r.reference(name, task)) is not None and low <= value <= high:
                bar.ax.axhline(value, color="red", linestyle=style, linewidth=2)
    seeds = seeds_text([len(m.runs) for m in r.methods])
    figure.suptitle(
        f"{r.suite}, {r.setting}: target score, mean over {seeds}. Colours run from the lowest "
        "majority reference to 100; red on the bars: the task's average majority (dotted) and "
        "lookup (dashed) references",
        fontsize=10,
    )
    figure.tight_layout()
    return figure


def _params_plot(r: Report, pyplot):
    tasks, seeds = r.tasks, seeds_text([len(m.runs) for m in r.methods])
    figure, axes = pyplot.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.9), squeeze=False)
    colours = pyplot.get_cmap("tab10")
    legend = {}  # label -> a method's marker or a reference's line, for the figure's one legend
    markers = "osD^vP*X"  # methods close in parameters stay apart by shape as well as colour
    for ax, task in zip(axes[0], tasks, strict=True):
        for i, m in enumerate(r.methods):
            scores = m.values(f"eval/{task}/avg_target")
            if not scores:
                continue
            x = statistics.fmean(trained_params(run.data.metrics) for run in m.runs)
            y = statistics.fmean(scores)
            sd = statistics.stdev(scores) if len(scores) > 1 else 0.0
            legend[m.name] = ax.errorbar(
                x, y, yerr=sd, fmt=markers[i % len(markers)], capsize=3, color=colours(i % 10),
                markersize=6, alpha=0.85,
            )  # fmt: skip
        for name, style in zip(REFERENCE_ORDER, (":", "--"), strict=True):
            if (value := r.reference(name, task)) is not None:
                line = ax.axhline(value, color="grey", linestyle=style, linewidth=1)
                legend[f"reference: {name}"] = line
        ax.set_xscale("log")
        ax.margins(x=0.25, y=0.15)
        low, high = ax.get_ylim()
        if high - low < _SPAN:  # as the heatmap: near-equal scores should look near-equal
            ax.set_ylim((low + high - _SPAN) / 2, (low + high + _SPAN) / 2)
        ax.set_xlabel("trained parameters (log scale)", fontsize=9)
        ax.set_ylabel(f"avg target {r.metric(task)}", fontsize=9)
        ax.set_title(f"{task}: mean ± sd over {seeds}", fontsize=10)
    figure.legend(
        legend.values(), legend.keys(), loc="lower center", ncol=min(len(legend), 8), fontsize=8,
        frameon=False,
    )  # fmt: skip
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    return figure


def _selection_plot(r: Report, pyplot):
    """Per method, every model's Spearman correlation of source dev with target dev over its
    checkpoints, and the target dev score source-dev selection gave up (`--oracle` runs)."""
    methods = [m for m in r.methods if _per_model(m, "selection_gap")]
    figure, axes = pyplot.subplots(1, 2, figsize=(9, 1.6 + 0.45 * len(methods)))
    for ax, (name, title) in zip(axes, SELECTION_PANELS, strict=True):
        for row, m in enumerate(methods):
            values = _per_model(m, name)
            ax.scatter(values, [row] * len(values), color="tab:blue", alpha=0.7)
            if values:
                ax.plot([statistics.fmean(values)] * 2, [row - 0.3, row + 0.3], color="black")
        ax.set_yticks(range(len(methods)), [m.name for m in methods], fontsize=9)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_xlim(-1.05, 1.05)
    axes[0].axvline(0, color="grey", linewidth=1)
    axes[1].set_yticks(range(len(methods)), [])
    figure.suptitle(
        f"{r.suite}, {r.setting}: how well source dev picks checkpoints for the targets "
        "(a dot per model and seed, a bar at the mean)",
        fontsize=10,
    )
    figure.tight_layout()
    return figure


SELECTION_PANELS = (
    ("spearman", "Spearman: source dev vs mean target dev"),
    ("selection_gap", "gap: target dev points given up"),
)
