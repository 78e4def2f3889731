"""`python -m bench export` and `bench import`: a suite's finished runs and tuning studies as
plain files, to commit beside the code or carry to another machine, and back into a store.

MLflow keeps runs in one database and Optuna its studies in another; neither travels with a git
clone, and a laptop, a cluster's scratch space or a lent machine is not forever. An export
folder holds, per run, its info, params, tags, every metric's history and its artifacts (the
`results.json`, `plan.json` and `config.json` that reports read, each gzipped), and the
studies in an Optuna journal file written by `optuna.copy_study`. Weights and stage caches stay
behind: `report`, `compare --reuse` and a study's continuation need none of them. A run average
of imported seeds does need their weights, so export a grid's run averages along with its
seeds. A trial that is still running is exported failed and queued again with its values: the
next machine runs it.

Run ids. MLflow gives an imported run a new id. A folder names each run by its origin id, the id
it had where it first ran, and so do the run ids inside its tags (a trial's parent study run,
`same_training`, `run_average`, `best.run_id`) and a study's `mlflow.parent_run_id`. An import
maps them to the new ids and tags each run `bench.origin_run_id`: importing a folder twice adds
nothing, and exporting the store again writes the same runs under the same names.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from bench.averaging import TAG as AVERAGED_TAG
from bench.errors import BenchError
from bench.report import SWEEP_TAG
from bench.runner import SAME_TRAINING
from bench.sweep import open_storage
from bench.tracking import Tracker, check_store, first_line, hide_password

ORIGIN_TAG = "bench.origin_run_id"  # on an imported run: the id it had where it first ran
MANIFEST = "export.json"
STUDIES = "studies.journal"
FORMAT = 1
PARENT_TAG = "mlflow.parentRunId"
ID_TAGS = (PARENT_TAG, SAME_TRAINING, "best.run_id")  # tags whose value is one run id
PARENT_ATTR = "mlflow.parent_run_id"  # a study's attr: its parent MLflow run
EXPERIMENT_ATTR = "mlflow.experiment_id"
BATCH = 100  # params and tags per `log_batch` call (MLflow's limit); metrics take 1000


def export(uri: str, storage: str, experiment: str, folder: Path) -> tuple[int, int, int]:
    """Writes the experiment's ended runs (FINISHED, and a study's trials in any ended state) and
    its studies into `folder`, beside what an earlier export put there; (runs, of them new,
    studies)."""
    check_store(uri, f"no runs to export for suite {experiment}")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per run
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise BenchError(f"the store {hide_password(uri)} has no runs of suite {experiment!r}")
    runs = [r for r in _runs(client, found.experiment_id) if _ended(r)]
    origins = {r.info.run_id: r.data.tags.get(ORIGIN_TAG, r.info.run_id) for r in runs}
    if folder.exists() and not (folder / MANIFEST).is_file() and any(folder.iterdir()):
        raise BenchError(f"{folder} is not empty and holds no {MANIFEST}: export into a new folder")
    if (folder / MANIFEST).is_file():
        _check_manifest(folder, experiment)
    folder.mkdir(parents=True, exist_ok=True)
    new = 0
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        staged = Path(scratch)
        for run in runs:
            origin = origins[run.info.run_id]
            new += not (folder / "runs" / origin).exists()
            _write_run(client, run, origin, origins, staged / "runs" / origin)
        studies = _write_studies(storage, uri, found.experiment_id, origins, folder, staged)
        for path in sorted((staged / "runs").glob("*")):  # whole runs replace whole runs
            shutil.rmtree(folder / "runs" / path.name, ignore_errors=True)
            (folder / "runs").mkdir(exist_ok=True)
            path.rename(folder / "runs" / path.name)
        if (staged / STUDIES).exists() and not _same_journal(staged / STUDIES, folder / STUDIES):
            (staged / STUDIES).replace(folder / STUDIES)
        manifest = {"format": FORMAT, "experiment": experiment}
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return len(runs), new, studies


def import_folder(
    folder: Path, uri: str, storage: str, artifact_root: Path
) -> tuple[int, int, int, str]:
    """Adds the folder's runs and studies to the store, each unless it is there already (by
    origin id, by study name); (runs read, runs added, studies added, the experiment's name)."""
    experiment = _check_manifest(folder, None)
    records = []
    for path in sorted((folder / "runs").glob("*/run.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError) as error:
            raise BenchError(f"{path} is not a readable run record: {first_line(error)}") from None
    artifact_root.parent.mkdir(parents=True, exist_ok=True)  # the store's folder, if sqlite
    tracker = Tracker(uri, experiment, artifact_root)
    client = tracker.client
    mapping = {
        run.data.tags.get(ORIGIN_TAG, run.info.run_id): run.info.run_id
        for run in _runs(client, tracker.experiment_id)
    }
    todo = [r for r in records if r["id"] not in mapping]
    created = []
    try:
        for record in todo:  # ids first: a run's tags may name any other run
            run = client.create_run(
                tracker.experiment_id, start_time=record["start_time"],
                tags={ORIGIN_TAG: record["id"]}, run_name=record["name"],
            )  # fmt: skip
            created.append(run.info.run_id)
            mapping[record["id"]] = run.info.run_id
        for record in todo:
            _fill(client, mapping[record["id"]], record, mapping, folder / "runs" / record["id"])
        studies = _read_studies(folder, storage, uri, tracker.experiment_id, mapping)
    except BaseException:
        for run_id in created:  # nothing half-imported: the next import starts over
            client.delete_run(run_id)
        raise
    return len(records), len(todo), studies, experiment


def _check_manifest(folder: Path, experiment: str | None) -> str:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise BenchError(
            f"{path} is unreadable ({first_line(error)}): not a folder `bench export` wrote"
        ) from None
    if manifest.get("format") != FORMAT:
        raise BenchError(f"{path}: format {manifest.get('format')!r}, this bench reads {FORMAT}")
    if experiment is not None and manifest["experiment"] != experiment:
        raise BenchError(
            f"{folder} holds runs of suite {manifest['experiment']!r}, not {experiment!r}: "
            "export each suite into its own folder"
        )
    return manifest["experiment"]


def _runs(client: MlflowClient, experiment_id: str) -> Iterator:
    token = None
    while True:
        page = client.search_runs([experiment_id], page_token=token, max_results=1000)
        yield from page
        token = page.token
        if not token:
            return


def _ended(run) -> bool:
    """A finished run, or a study's trial that ended (pruned, failed): what the store knows for
    good. An interrupted grid run resumes from a checkpoint, which an export does not carry."""
    if run.info.status == "FINISHED":
        return True
    return SWEEP_TAG in run.data.tags and run.info.status in ("KILLED", "FAILED")


def _mapped(tags: dict[str, str], ids: dict[str, str]) -> dict[str, str]:
    """The tags with every run id they name replaced by `ids`' value for it (when it has one)."""
    out = dict(tags)
    for key in ID_TAGS:
        if key in out:
            out[key] = ids.get(out[key], out[key])
    if AVERAGED_TAG in out:
        out[AVERAGED_TAG] = ",".join(ids.get(i, i) for i in out[AVERAGED_TAG].split(","))
    return out


def _write_run(client: MlflowClient, run, origin: str, origins: dict, target: Path) -> None:
    tags = {k: v for k, v in run.data.tags.items() if k != ORIGIN_TAG}
    record = {
        "id": origin,
        "name": run.info.run_name,
        "status": run.info.status,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        "params": dict(sorted(run.data.params.items())),
        "tags": dict(sorted(_mapped(tags, origins).items())),
        "metrics": {
            key: [
                [m.step, m.timestamp, m.value]
                for m in client.get_metric_history(run.info.run_id, key)
            ]
            for key in sorted(run.data.metrics)
        },
    }
    target.mkdir(parents=True)
    (target / "run.json").write_text(json.dumps(record, indent=1) + "\n")
    if not client.list_artifacts(run.info.run_id):
        return
    with tempfile.TemporaryDirectory() as scratch:  # each file gzipped: a whole test set's
        found = Path(client.download_artifacts(run.info.run_id, "", scratch))  # predictions
        for path in sorted(p for p in found.rglob("*") if p.is_file()):  # are 10 MB, 0.2 gzipped
            packed = target / "artifacts" / f"{path.relative_to(found)}.gz"
            packed.parent.mkdir(parents=True, exist_ok=True)
            packed.write_bytes(gzip.compress(path.read_bytes(), mtime=0))


def _fill(client: MlflowClient, run_id: str, record: dict, ids: dict, folder: Path) -> None:
    params = [Param(k, v) for k, v in record["params"].items()]
    tags = [RunTag(k, v) for k, v in _mapped(record["tags"], ids).items()]
    metrics = [
        Metric(key, value, timestamp, step)
        for key, history in record["metrics"].items()
        for step, timestamp, value in history
    ]
    for i in range(0, max(len(params), len(tags)), BATCH):
        client.log_batch(run_id, params=params[i : i + BATCH], tags=tags[i : i + BATCH])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    packed = folder / "artifacts"
    if packed.is_dir():
        with tempfile.TemporaryDirectory() as scratch:
            for path in packed.rglob("*.gz"):
                plain = Path(scratch) / path.relative_to(packed).with_suffix("")
                plain.parent.mkdir(parents=True, exist_ok=True)
                plain.write_bytes(gzip.decompress(path.read_bytes()))
            client.log_artifacts(run_id, scratch)
    client.set_terminated(run_id, record["status"], end_time=record["end_time"])


def _journal(path: Path) -> optuna.storages.JournalStorage:
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def _same_journal(new: Path, old: Path) -> bool:
    """Whether two journals hold the same operations. Optuna stamps each line with its writer's
    random worker id, so an export of unchanged studies differs from the last one only there,
    and rewriting it would change a committed results folder for nothing."""

    def operations(path: Path) -> list[dict]:
        lines = path.read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "worker_id"} for line in lines]

    return old.exists() and operations(new) == operations(old)


def _studies(storage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


def _write_studies(
    storage: str, uri: str, experiment_id: str, origins: dict, folder: Path, staged: Path
) -> int:
    """The experiment's studies in the store, and those of an earlier export the store lacks,
    into a new journal at `staged`; how many."""
    source = open_storage(storage, uri) if _has_studies(storage) else None
    mine = []
    if source is not None:
        for name in _studies(source):
            attrs = optuna.load_study(study_name=name, storage=source).user_attrs
            if attrs.get(EXPERIMENT_ATTR) == experiment_id:
                mine.append(name)
    earlier = _journal(folder / STUDIES) if (folder / STUDIES).exists() else None
    kept = [n for n in _studies(earlier) if n not in mine] if earlier is not None else []
    if not mine and not kept:
        return 0
    target = _journal(staged / STUDIES)
    for name in kept:
        optuna.copy_study(from_study_name=name, from_storage=earlier, to_storage=target)
    for name in mine:
        optuna.copy_study(from_study_name=name, from_storage=source, to_storage=target)
        study = optuna.load_study(study_name=name, storage=target)
        parent = study.user_attrs.get(PARENT_ATTR)
        study.set_user_attr(PARENT_ATTR, origins.get(parent, parent))
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            # its run is not exported (it resumes from a checkpoint the folder lacks): failed,
            # and queued again with its values, as a worker that died is (`sweep._Retry`)
            target.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            with warnings.catch_warnings():  # "experimental" in optuna 5, as in `sweep`
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                RetryHeartbeatStaleTrialCallback(max_retry=1)(study, trial)
    return len(mine) + len(kept)


def _has_studies(storage: str) -> bool:
    """A default sqlite storage that is not there holds no study (and is not to be created)."""
    return not storage.startswith("sqlite:///") or Path(storage.removeprefix("sqlite:///")).exists()


def _read_studies(folder: Path, storage: str, uri: str, experiment_id: str, ids: dict) -> int:
    if not (folder / STUDIES).exists():
        return 0
    source = _journal(folder / STUDIES)
    target = open_storage(storage, uri)
    present = set(_studies(target))
    added = 0
    for name in _studies(source):
        if name in present:
            continue
        optuna.copy_study(from_study_name=name, from_storage=source, to_storage=target)
        study = optuna.load_study(study_name=name, storage=target)
        parent = study.user_attrs.get(PARENT_ATTR)
        study.set_user_attr(PARENT_ATTR, ids.get(parent, parent))
        study.set_user_attr(EXPERIMENT_ATTR, experiment_id)
        added += 1
    return added
