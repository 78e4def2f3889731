"""Logging to MLflow: the one place that talks to it.

Default store: sqlite in the output folder, with artifacts beside it; any other tracking URI (a
`mlflow server`, a database) through `--tracking-uri` or MLFLOW_TRACKING_URI. One experiment per
suite; params flattened (`method.lr`); metrics named `eval/<task>/<lang>/<metric>` and so on.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bench import interrupts
from bench.errors import BenchError

MAX_BATCH = 500  # below MLflow's per-request limit of 1000 metrics
REACH_TIMEOUT_S = 5.0  # how long `Tracker.check_reachable` waits for a server to answer


# Run keys that are results, not inputs: the digest of the labelled batches a run trained on (a
# param logged at its end), and the tag of a run whose source scores did not beat the majority.
STREAM_PARAM = "budget.labelled_stream"
NOT_LEARNED = "warning.not_learned"
LANGUAGE_NOTE = "note.language."  # + a language code: how the method served it (`language_notes`)


def input_params(params: Mapping[str, str]) -> dict[str, str]:
    """A run's logged params without those that are results (`STREAM_PARAM`): what it was asked."""
    return {k: v for k, v in params.items() if k != STREAM_PARAM}


def resolve_uri(output: Path, tracking_uri: str | None) -> str:
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{(output / 'mlflow.db').resolve()}"


def check_store(uri: str, what: str) -> None:
    """A default sqlite store that is not there is an error: MLflow would create an empty one.
    `what` says what was looked for ("no such run", ...)."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise BenchError(f"{what}; there is no MLflow store {uri}")


VIEW = "bench"  # the runs table's saved view, opened by `?viewStateShareKey=bench`
VIEW_TAG = f"mlflow.sharedViewState.{VIEW}"  # the experiment tag MLflow's UI reads it from


def results_view(tasks: list[str]) -> str:
    """The experiment tag's value that makes MLflow's runs table (3.17) open on results: each
    run's method variant, setting and seed, its average target score per task, its trained
    parameters and training time; and its Chart tab on a bar chart per task and the scores
    against trained parameters. MLflow reads no columns or charts from the URL, only this tag
    (its "shared view"), for every visitor of `#/experiments/<id>/runs?viewStateShareKey=bench`."""
    scores = [f"metrics.`eval/{task}/avg_target`" for task in tasks]
    columns = ["tags.`variant`", "tags.`setting`", "tags.`seed`", *scores,
               "metrics.`params/trainable`", "metrics.`time/train_s`"]  # fmt: skip
    section = "bench-scores"

    def card(uuid: str, kind: str, **fields: Any) -> dict[str, Any]:
        return {"uuid": uuid, "type": kind, "metricSectionId": section, "deleted": False,
                "isGenerated": False, "runsCountToCompare": 100, **fields}  # fmt: skip

    charts = [card(f"bench-{t}", "BAR", metricKey=f"eval/{t}/avg_target") for t in tasks]
    charts += [
        card(
            f"bench-{t}-params",
            "SCATTER",
            xaxis={"key": "params/trainable", "type": "METRIC"},
            yaxis={"key": f"eval/{t}/avg_target", "type": "METRIC"},
        )
        for t in tasks
    ]
    state = {
        "selectedColumns": columns,
        "columnOrder": ["attributes.`Run Name`", *columns],
        # narrow enough that the scores fit on a screen beside MLflow's assistant panel
        "columnWidths": {c: 80 if c.startswith("tags.") else 140 for c in columns},
        "viewMaximized": True,
        "compareRunCharts": charts,
        "compareRunSections": [
            {
                "uuid": section,
                "name": "average target score per task",
                "display": True,
                "isReordered": False,
                "deleted": False,
                "isGenerated": False,
            }
        ],
        "isAccordionReordered": True,
        "chartsSearchFilter": "avg_target",
    }
    return json.dumps(
        {"name": "bench: results", "createdAt": _now_ms(), "state": json.dumps(state)}
    )


def ui_hint(uri: str, experiment_id: str, run_id: str) -> str:
    """How to see a run: its link on a server, or the `bench ui` command for its store."""
    if uri.startswith("http"):
        return f"open {uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    prefix, suffix = "sqlite:///", "/mlflow.db"
    if uri.startswith(prefix) and uri.endswith(suffix):  # the default store of an --output
        folder = Path(uri[len(prefix) : -len(suffix)])
        if folder.is_relative_to(Path.cwd()):
            folder = folder.relative_to(Path.cwd())
        where = f"--output {shlex.quote(str(folder) or '.')}"
    else:
        where = f"--tracking-uri {shlex.quote(uri)}"
    return (
        f"view it with: python -m bench ui {where}\n"
        f"  then open http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run_id}"
    )


def git_state() -> dict[str, str]:
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {"git.commit": "unknown"}
    return {"git.commit": commit, "git.dirty": str(bool(git("status", "--porcelain")))}


# where an empty sqlite store that MLflow made and migrated is kept, one per MLflow version
TEMPLATES = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xlt-bench"


def seed_store(uri: str) -> None:
    """A new sqlite store starts as a copy of an empty one that MLflow made: MLflow creates a
    store by running its ~70 schema migrations, seconds of CPU for every new output folder.
    The copy holds no experiment, so MLflow adds its Default one, as to a store it made."""
    import sqlite3

    import mlflow

    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///"))
    template = TEMPLATES / f"mlflow-{mlflow.__version__}-empty.db"
    if path.exists() or not path.parent.is_dir():
        return
    try:
        if not template.is_file():
            TEMPLATES.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=TEMPLATES) as folder:
                made = Path(folder) / "mlflow.db"
                client = MlflowClient(f"sqlite:///{made}")
                client.search_experiments()  # opening it migrates it and adds Default
                with contextlib.closing(sqlite3.connect(made)) as db, db:
                    db.execute("DELETE FROM experiments")
                os.replace(made, template)  # whole, or not at all: processes race here
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        shutil.copyfile(template, partial)
        try:
            os.link(partial, path)  # never over a store another process made meanwhile
        finally:
            partial.unlink()
    except OSError:  # no cache folder, or the store is there now: MLflow opens what is there
        return


def _whole(method):
    """A call to the tracking store that a signal (Ctrl-C, SIGTERM, Slurm's requeue) never cuts
    short: the signal acts once the call returns. Cut inside a database call, the store's
    connection was left mid-transaction, and the checkpoint the interrupt then records failed."""

    @functools.wraps(method)
    def call(*args, **kwargs):
        with interrupts.deferred():
            return method(*args, **kwargs)

    return call


class Tracker:
    """One MLflow run: created by `start`, finished by `end`."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path | None) -> None:
        self.uri = uri
        seed_store(uri)
        self.client = MlflowClient(tracking_uri=uri)
        try:
            found = self.client.get_experiment_by_name(experiment)
        except Exception as error:  # the store could not be reached or opened
            raise BenchError(
                f"tracking store {hide_password(uri)} is unusable: {first_line(error)}"
            ) from None
        if found is None:
            location = None
            if artifact_root is not None and not uri.startswith(("http", "databricks")):
                location = (artifact_root / experiment).resolve().as_uri()
            try:
                self.experiment_id = self.client.create_experiment(experiment, location)
            except MlflowException:  # another process created it just now: take that one
                found = self.client.get_experiment_by_name(experiment)
                if found is None:
                    raise
                self.experiment_id = found.experiment_id
        else:
            self.experiment_id = found.experiment_id
        self.run_id = ""

    def show_results(self, tasks: list[str]) -> None:
        """The experiment's runs table opens on results (`results_view`); set once."""
        if VIEW_TAG in self.client.get_experiment(self.experiment_id).tags:
            return
        try:
            self.client.set_experiment_tag(self.experiment_id, VIEW_TAG, results_view(tasks))
        except MlflowException:  # a sweep's other worker, or a parallel grid, set it just now
            if VIEW_TAG not in self.client.get_experiment(self.experiment_id).tags:
                raise

    @staticmethod
    def check_reachable(uri: str, timeout: float = REACH_TIMEOUT_S) -> None:
        """Fails at once when an http(s) tracking server does not answer: one request, a short
        timeout, no retries (MLflow's client retries with backoff for minutes before it gives
        up). Any HTTP answer, even 401 or 404, is a server that is there; so is a TLS handshake
        that fails (its certificate is MLflow's to verify). Other URIs are not checked."""
        parts = urllib.parse.urlsplit(uri)
        if parts.scheme not in ("http", "https"):
            return
        host = parts.netloc.rpartition("@")[2]  # credentials are for MLflow, not for this probe
        url = urllib.parse.urlunsplit((parts.scheme, host, parts.path or "/", "", ""))
        request = urllib.request.Request(url, method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                return
        except urllib.error.HTTPError:
            return  # an answer
        except (OSError, ValueError, http.client.HTTPException) as error:
            reason = error.reason if isinstance(error, urllib.error.URLError) else error
            if isinstance(reason, ssl.SSLError):
                return
            why = reason if isinstance(reason, str) else _why(reason)
            raise BenchError(
                f"tracking server {hide_password(uri)} cannot be reached ({why}); "
                "start it, or check --tracking-uri and MLFLOW_TRACKING_URI"
            ) from None

    @_whole
    def start(self, name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        self.run_id = run.info.run_id
        self.params(params)
        return self.run_id

    @_whole
    def params(self, values: dict[str, Any]) -> None:
        items = [Param(k, param_text(v)) for k, v in sorted(values.items())]
        for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    @_whole
    def resume(self, run_id: str, tags: dict[str, str]) -> None:
        """Takes over an interrupted run: RUNNING again, its `stopped`/`error` tags gone."""
        self.run_id = run_id
        self.client.update_run(run_id, status="RUNNING")
        held = self.client.get_run(run_id).data.tags
        for key in ("stopped", "error"):
            if key in held:
                self.client.delete_tag(run_id, key)
        self.tags(tags)

    @_whole
    def metrics(self, values: dict[str, float], step: int = 0) -> None:
        stamp = _now_ms()
        items = [Metric(k, float(v), stamp, step) for k, v in values.items() if v is not None]
        for i in range(0, len(items), MAX_BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + MAX_BATCH])

    @_whole
    def tags(self, values: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in values.items()])

    @_whole
    def artifact(self, payload: Any, name: str) -> None:
        self.client.log_dict(self.run_id, payload, name)

    @_whole
    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, RunStatus.to_string(getattr(RunStatus, status)))


class Quiet:
    """What the other processes of a data-parallel run log through: nothing (process 0 logs)."""

    run_id = ""

    def metrics(self, values: dict[str, float], step: int = 0) -> None:
        pass

    def tags(self, values: dict[str, str]) -> None:
        pass


def param_text(value: Any) -> str:
    """A param value as it is logged: a string, None as "None"."""
    return "None" if value is None else str(value)


def _now_ms() -> int:
    return int(time.time() * 1000)


def hide_password(uri: str) -> str:
    """A store URI fit to print and log: `scheme://user:***@host/...`."""
    return re.sub(r"://([^:/@]+):[^/]*@", r"://\1:***@", uri)  # to the last @: one in it too


def _why(error: BaseException) -> str:
    """`Connection refused`, `timed out`: an OS error's own words, else its first line."""
    return getattr(error, "strerror", None) or first_line(error)


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
