"""Logging to MLflow: the one place that talks to it.

Default store: sqlite in the output folder, with artifacts beside it; any other tracking URI (a
`mlflow server`, a database) through `--tracking-uri` or MLFLOW_TRACKING_URI. One experiment per
suite; params flattened (`method.lr`); metrics named `eval/<task>/<lang>/<metric>` and so on.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from bench.errors import BenchError

MAX_BATCH = 500  # below MLflow's per-request limit of 1000 metrics


def resolve_uri(output: Path, tracking_uri: str | None) -> str:
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{(output / 'mlflow.db').resolve()}"


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


class Tracker:
    """One MLflow run: created by `start`, finished by `end`."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path | None) -> None:
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        try:
            found = self.client.get_experiment_by_name(experiment)
        except Exception as error:  # the store could not be reached or opened
            raise BenchError(f"tracking store {uri} is unusable: {first_line(error)}") from None
        if found is None:
            location = None
            if artifact_root is not None and not uri.startswith(("http", "databricks")):
                location = (artifact_root / experiment).resolve().as_uri()
            self.experiment_id = self.client.create_experiment(experiment, location)
        else:
            self.experiment_id = found.experiment_id
        self.run_id = ""

    def start(self, name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        self.run_id = run.info.run_id
        items = [Param(k, param_text(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])
        return self.run_id

    def metrics(self, values: dict[str, float], step: int = 0) -> None:
        stamp = _now_ms()
        items = [Metric(k, float(v), stamp, step) for k, v in values.items() if v is not None]
        for i in range(0, len(items), MAX_BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + MAX_BATCH])

    def tags(self, values: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in values.items()])

    def artifact(self, payload: Any, name: str) -> None:
        self.client.log_dict(self.run_id, payload, name)

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, RunStatus.to_string(getattr(RunStatus, status)))


def param_text(value: Any) -> str:
    """A param value as it is logged: a string, None as "None"."""
    return "None" if value is None else str(value)


def _now_ms() -> int:
    return int(time.time() * 1000)


def hide_password(uri: str) -> str:
    """A store URI fit to print and log: `scheme://user:***@host/...`."""
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", uri)


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
