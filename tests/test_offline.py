"""Offline honesty: the demo suite runs with the network blocked, and a suite that needs the
hub stops at once with HF_HUB_OFFLINE set, with one line and without asking the network.

The commands run as a user runs them, in a fresh interpreter whose sockets refuse every IPv4 and
IPv6 connection and name lookup (`GUARD`) and report each attempt on stderr: an error a library
swallows still leaves its line, and an attempt that is refused at once cannot wait for a timeout.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import huggingface_hub
import pytest

from bench.errors import BenchError
from bench.task import Kind
from tasks import hub, paper
from tasks.hub import HubPart, HubSource

ROOT = Path(__file__).resolve().parents[1]
MARKER = "NETWORK ATTEMPT"
GUARD = f"""
import socket, sys

def _refuse(what):
    sys.stderr.write("{MARKER}: %r\\n" % (what,))
    sys.stderr.flush()
    raise OSError("network blocked by the test")

_INET = (socket.AF_INET, socket.AF_INET6)
_connect, _connect_ex, _getaddrinfo = (
    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo
)

def connect(self, address):
    if self.family in _INET:
        _refuse(address)
    return _connect(self, address)

def connect_ex(self, address):
    if self.family in _INET:
        _refuse(address)
    return _connect_ex(self, address)

def create_connection(address, *args, **kwargs):
    _refuse(address)

def getaddrinfo(host, port, family=0, *args, **kwargs):
    if family in (socket.AF_UNSPEC, *_INET):
        _refuse((host, port))
    return _getaddrinfo(host, port, family, *args, **kwargs)

socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
socket.create_connection, socket.getaddrinfo = create_connection, getaddrinfo
"""
BENCH = "from bench.cli import main\nsys.exit(main(sys.argv[1:]))"
# What a test process sets that a user's shell does not: conftest's offline switches (each test
# sets its own), pytest's PYTEST_CURRENT_TEST (which turns MLflow's telemetry off), and caches.
CLEARED = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "PYTEST_CURRENT_TEST", "HF_HUB_CACHE",
           "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE", "MLFLOW_TRACKING_URI",
           hub.MIRROR_VARIABLE)  # fmt: skip


def blocked(args: list[str], home: Path, code: str = BENCH, **env: str):
    """`python -c GUARD+code args` with the network blocked, an empty Hugging Face cache in
    `home` and `env` on top of the user's environment."""
    environ = {k: v for k, v in os.environ.items() if k not in CLEARED}
    environ.update(HF_HOME=str(home), **env)
    command = [sys.executable, "-c", GUARD + code, *args]
    return subprocess.run(command, cwd=ROOT, env=environ, capture_output=True, text=True)


def test_the_guard_catches_the_hub_client(tmp_path):
    code = f"import huggingface_hub\nhuggingface_hub.HfApi().model_info({paper.BACKBONE!r})"
    result = blocked([], tmp_path / "hf", code)
    assert result.returncode == 1 and f"{MARKER}: ('huggingface.co', 443)" in result.stderr
    raw = "socket.socket().connect(('127.0.0.1', 9))"
    assert f"{MARKER}: ('127.0.0.1', 9)" in blocked([], tmp_path / "hf", raw).stderr


@pytest.mark.slow
def test_the_demo_suite_runs_with_the_network_blocked(tmp_path):
    out = tmp_path / "runs"
    args = ["run", "--method", "hyperx", "--setting", "mixed", "--max-steps", "60",
            "--eval-every", "30", "--set", "train.eval_cap=200", "--output", str(out),
            "--no-progress"]  # fmt: skip
    result = blocked(args, tmp_path / "hf")  # no offline switch: nothing should want the hub
    assert MARKER not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    assert "task  language          role    metric" in result.stdout
    assert "pos   avg over targets" in result.stdout and "MLflow run " in result.stdout
    assert (out / "mlflow.db").exists()


def _cached_backbone(home: Path) -> None:
    """The demo backbone's files in `home`'s hub cache as the paper's backbone at `main`."""
    repo = home / "hub" / f"models--{paper.BACKBONE.replace('/', '--')}"
    commit = "0" * 40
    (repo / "snapshots" / commit).mkdir(parents=True)
    for file in (ROOT / "backbones" / "demo").iterdir():
        (repo / "snapshots" / commit / file.name).symlink_to(file)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


@pytest.mark.parametrize(
    ("backbone_cached", "message"),
    [
        (False, f"backbone {paper.BACKBONE} is not in the local Hugging Face cache"),
        (True, "hub dataset unimelb-nlp/wikiann (en, train) cannot be read: it is not in the"),
    ],
    ids=["nothing-cached", "backbone-cached"],
)
def test_the_paper_suite_offline_stops_at_once_with_one_line(tmp_path, backbone_cached, message):
    home, out = tmp_path / "hf", tmp_path / "runs"
    if backbone_cached:  # then the first hub dataset is what is missing
        _cached_backbone(home)
    args = ["run", "--method", "hyperx", "--suite", "paper", "--setting", "mixed", "--output",
            str(out), "--no-progress"]  # fmt: skip
    result = blocked(args, home, HF_HUB_OFFLINE="1")
    assert MARKER not in result.stderr, result.stderr  # nothing asked: nothing could time out
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {message}") and "HF_HUB_OFFLINE is set" in line
    assert not out.exists() or not any(out.iterdir())  # no MLflow run, no cache, no checkpoint


def test_the_paper_plan_needs_no_network(tmp_path):
    """The Plan prints; its backbone check looks in the cache alone, and says it is not there."""
    result = blocked(["plan", "--suite", "paper", "--setting", "mixed"], tmp_path / "hf")
    assert MARKER not in result.stderr, result.stderr
    assert result.returncode == 2 and "Plan: suite paper, setting mixed" in result.stdout
    assert "`bench plan` does not download it (a run does)" in result.stderr


@pytest.mark.parametrize(
    ("part", "kind", "way_out"),
    [
        (HubPart(hub.WIKIANN, "yo"), Kind.TOKEN, "run once where the hub can be reached"),
        (HubPart(hub.WIKIPEDIA, "20231101.yo"), Kind.MLM, "streamed text is never cached"),
    ],
)
def test_hf_datasets_offline_alone_keeps_hub_data_off_the_network(
    monkeypatch, tmp_path, part, kind, way_out
):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:1])
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the hub's unset
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # HF_DATASETS_OFFLINE=1
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path))  # empty
    monkeypatch.delenv(hub.MIRROR_VARIABLE, raising=False)
    hub._commit.cache_clear()  # `main` is not resolved to a commit: that would ask the hub
    source = HubSource(kind, {"yor": part}, () if kind is Kind.MLM else paper.WIKIANN_LABELS)
    split = source.splits("yor")[-1]
    with pytest.raises(BenchError) as error:
        source.check("yor", split)
    assert f"{part.dataset.repo} ({part.config}, " in str(error.value)
    assert "HF_DATASETS_OFFLINE is set" in str(error.value) and way_out in str(error.value)
    assert attempts == []
    hub._commit.cache_clear()
