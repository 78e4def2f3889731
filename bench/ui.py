"""`python -m bench ui`: the MLflow UI over a run folder's store, in the foreground.

It starts the real `mlflow server` over the store that runs with the same `--output` and
`--tracking-uri` use (by default sqlite `<output>/mlflow.db`, created if missing), with one
worker and MLflow's job execution off (about 520 MB; the defaults took 2.6 GB). Artifacts: runs of
the default store record `file://` locations, which the server reads directly; runs logged
through this server upload theirs to `<output>/artifacts/` (`--serve-artifacts`), never into
the working directory. Ctrl-C or SIGTERM stops the server and everything it started.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.errors import BenchError
from bench.tracking import VIEW, VIEW_TAG, hide_password, resolve_uri

START_TIMEOUT_S = 120.0  # a cold start on a busy 2-core machine takes 5-20 s
STOP_TIMEOUT_S = 15.0
LOG_NAME = "ui.log"


def server_command(uri: str, output: Path, host: str, port: int) -> list[str]:
    """The `mlflow server` command line `bench ui` runs (its env: see `server_env`)."""
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", uri,
        "--serve-artifacts", "--artifacts-destination", (output / "artifacts").resolve().as_uri(),
        "--workers", "1", "--host", host, "--port", str(port),
    ]  # fmt: skip


def server_env() -> dict[str, str]:
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def serve(output: Path, tracking_uri: str | None, host: str, port: int) -> int:
    """Run the UI until Ctrl-C or SIGTERM; 0 when stopped that way."""
    uri = resolve_uri(output, tracking_uri)
    if uri.startswith(("http://", "https://")):
        print(f"MLflow UI: {uri.rstrip('/')}/#/experiments", flush=True)
        print("(the tracking URI is a server already: nothing to start)", flush=True)
        return 0
    if not 0 < port < 65536:
        raise BenchError(f"--port {port} is invalid: give a port in 1-65535")
    _check_port_free(host, port)
    output.mkdir(parents=True, exist_ok=True)
    log_path = output / LOG_NAME
    base = f"http://{_connect_host(host)}:{port}"
    stop = _StopOnSignal()
    try:
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                server_command(uri, output, host, port), env=server_env(),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent,
            )  # fmt: skip
    except BaseException:
        stop.restore()
        raise
    try:
        _wait_until_healthy(process, base, log_path, stop)
        if stop.requested:
            return 0
        shown = hide_password(uri)
        print(f"MLflow server (pid {process.pid}) over {shown}; its log: {log_path}", flush=True)
        path = _experiment_path(base)
        print(f"MLflow UI: {base}/#/experiments{path}", flush=True)
        if "viewStateShareKey" in path:
            print(f"its charts: {base}/#/experiments{path}&compareRunsMode=CHART", flush=True)
        print("Ctrl-C stops it.", flush=True)
        while not stop.requested:
            _check_running(process, log_path, "")
            time.sleep(0.5)
        print("stopping the MLflow server", flush=True)
        return 0
    finally:
        stop.restore()
        _stop(process)


def _check_port_free(host: str, port: int) -> None:
    # a server already answering there would pass the health check below: refuse before starting
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise BenchError(f"--host {host!r} is invalid: {error.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise BenchError(
                    f"port {port} on {host} is already in use: stop what listens there "
                    "or pass another --port"
                ) from None
            raise BenchError(f"cannot listen on {host}:{port}: {error.strerror}") from None


def _connect_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _wait_until_healthy(
    process: subprocess.Popen, base: str, log_path: Path, stop: _StopOnSignal
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not stop.requested:
        _check_running(process, log_path, " at start")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            raise BenchError(
                f"the MLflow server did not answer {base}/health within {START_TIMEOUT_S:.0f} s "
                f"(log: {log_path})"
            )
        time.sleep(0.25)


def _check_running(process: subprocess.Popen, log_path: Path, when: str) -> None:
    code = _exit_code(process)
    if code is not None:
        raise BenchError(
            f"the MLflow server exited{when} with code {code}: {_last_line(log_path)} "
            f"(log: {log_path})"
        )


def _experiment_path(base: str) -> str:
    """'/<id>/runs' (its runs table) of the store's one experiment but MLflow's 'Default', or '';
    with the saved view that shows results when the experiment has it (`tracking.VIEW_TAG`)."""
    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/experiments/search",
        data=json.dumps({"max_results": 1000}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            found = json.load(response).get("experiments", [])
    except (OSError, ValueError, urllib.error.URLError):
        return ""
    found = [e for e in found if e.get("name") != "Default"]
    if len(found) != 1:
        return ""
    tags = {t["key"] for t in found[0].get("tags", [])}
    view = f"?viewStateShareKey={VIEW}" if VIEW_TAG in tags else ""
    return f"/{found[0]['experiment_id']}/runs{view}"


def _last_line(log_path: Path) -> str:
    """The server's last error line: what a user needs to see of a failed start."""
    try:
        lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines()]
    except OSError:
        return "no log"
    lines = [line for line in lines if line]
    errors = [line for line in lines if re.search(r"(Error|Exception|ERROR)\S*:\s", line)]
    return (errors or lines or ["no output"])[-1][:300]


class _StopOnSignal:
    """SIGINT and SIGTERM set `requested` instead of raising mid-call."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
        }

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (the server and its uvicorn worker), then SIGKILL.

    The server is reaped only at the end: until then its pid, which names the group, cannot be
    reused, so the signals reach no other process.
    """
    if process.returncode is None:
        _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _exit_code(process) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        _signal_group(process, signal.SIGKILL)  # whatever of the group is left
    process.wait()


def _exit_code(process: subprocess.Popen) -> int | None:
    """The server's exit code once it has exited, without reaping it (None while it runs)."""
    if process.returncode is not None:
        return process.returncode
    try:
        info = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return process.wait()
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def _signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _die_with_parent() -> None:
    """In the child: SIGTERM when `bench ui` dies, even by SIGKILL (Linux), so no orphan."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
