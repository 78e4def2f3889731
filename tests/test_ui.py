"""`python -m bench ui` end to end: the real MLflow server, two runs logged through it by the
harness, read back by its REST API, and their comparison page rendered by headless Chromium.

Set BENCH_UI_SCREENSHOTS=reports to keep copies of the screenshots (the README's): ui-runs.png,
ui-charts.png and ui-compare.png.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from bench import ui as bench_ui
from bench.tracking import VIEW, VIEW_TAG, Tracker, ui_hint

ROOT = Path(__file__).resolve().parent.parent
RUN_NAMES = ("dummy-mixed-s0", "dummy-mixed-s1")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONPATH=str(ROOT))
    return env


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def _post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """`bench ui` over a fresh folder, two dummy runs logged through it; stopped at the end."""
    tmp = tmp_path_factory.mktemp("ui")
    port = _free_port()
    command = [sys.executable, "-m", "bench", "ui", "--output", str(tmp), "--port", str(port)]
    process = subprocess.Popen(
        command, cwd=tmp, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        lines = []
        while not any(line.startswith("MLflow UI: ") for line in lines):
            line = process.stdout.readline()  # `bench ui` gives up by itself after 120 s
            assert line, f"bench ui ended before its URL line: {''.join(lines)}"
            lines.append(line)
        url = next(line for line in lines if line.startswith("MLflow UI: ")).split()[-1]
        base = f"http://127.0.0.1:{port}"
        assert url == f"{base}/#/experiments"  # a fresh folder: no experiment yet
        for seed in (0, 1):
            args = ["run", "--method", "dummy", "--max-steps", "20", "--eval-every", "10"]
            args += ["--seed", str(seed), "--tracking-uri", base, "--output", str(tmp / "runs")]
            done = subprocess.run(
                [sys.executable, "-m", "bench", *args, "--no-progress"],
                cwd=tmp, env=_env(), capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr[-3000:]
            assert f"open {base}/#/experiments/" in done.stdout
        yield {"base": base, "tmp": tmp, "process": process}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        finally:
            rest = process.stdout.read()
            process.stdout.close()
        assert code == 0, rest
        # no orphan: nothing answers on the port any more
        with socket.socket() as probe, pytest.raises(OSError):
            probe.settimeout(2)
            probe.connect(("127.0.0.1", port))


@pytest.fixture(scope="module")
def runs(ui):
    base = ui["base"]
    experiment = _get(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=demo")
    experiment_id = experiment["experiment"]["experiment_id"]
    found = _post(
        f"{base}/api/2.0/mlflow/runs/search",
        {"experiment_ids": [experiment_id], "max_results": 10, "order_by": ["params.seed ASC"]},
    )["runs"]
    return experiment_id, found


@pytest.mark.slow
def test_runs_logged_through_bench_ui_are_comparable(ui, runs):
    base, tmp = ui["base"], ui["tmp"]
    experiment_id, found = runs
    assert [r["info"]["run_name"] for r in found] == list(RUN_NAMES)
    # what `bench ui` links to once the store has the suite's experiment: its runs table, in
    # the view that shows results, which the runs set on the experiment
    assert bench_ui._experiment_path(base) == f"/{experiment_id}/runs?viewStateShareKey=bench"
    experiment = _get(f"{base}/api/2.0/mlflow/experiments/get?experiment_id={experiment_id}")
    tags = {t["key"]: t["value"] for t in experiment["experiment"]["tags"]}
    state = json.loads(json.loads(tags[VIEW_TAG])["state"])
    assert "metrics.`eval/pos/avg_target`" in state["selectedColumns"]
    metric_names, param_names = [], []
    for seed, run in enumerate(found):
        info, data = run["info"], run["data"]
        assert info["status"] == "FINISHED"
        tags = {t["key"]: t["value"] for t in data["tags"]}
        expected = {"method": "dummy", "setting": "mixed", "suite": "demo", "seed": str(seed)}
        assert {k: tags.get(k) for k in expected} == expected
        param_names.append({p["key"] for p in data["params"]})
        metric_names.append({m["key"] for m in data["metrics"]})
    assert param_names[0] == param_names[1] and "method.lr" in param_names[0]
    assert metric_names[0] == metric_names[1]
    assert {"eval/pos/avg_target", "params/trainable", "time/train_s"} <= metric_names[0]

    # the artifacts, as the UI reads them: listed and fetched through the server
    run_id = found[0]["info"]["run_id"]
    listed = _get(f"{base}/api/2.0/mlflow/artifacts/list?run_id={run_id}")
    assert {"config.json", "plan.json", "results.json"} <= {f["path"] for f in listed["files"]}
    query = urllib.parse.urlencode({"path": "results.json", "run_uuid": run_id})
    results = _get(f"{base}/get-artifact?{query}")
    assert results and isinstance(results, (dict, list))
    # uploaded into --output/artifacts, not into the server's working directory
    assert list((tmp / "artifacts").rglob("results.json"))
    assert not (tmp / "mlartifacts").exists()


@pytest.mark.slow
def test_file_artifact_locations_are_served(ui, tmp_path):
    """Runs of the default sqlite store record file:// artifact locations: the UI shows them."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=ui["base"])
    location = (tmp_path / "artifacts" / "local").resolve().as_uri()
    experiment_id = client.create_experiment("file-artifacts", artifact_location=location)
    run_id = client.create_run(experiment_id).info.run_id
    client.log_dict(run_id, {"pairs": [1, 2]}, "results.json")  # written to the folder directly
    client.set_terminated(run_id)
    query = urllib.parse.urlencode({"path": "results.json", "run_uuid": run_id})
    assert _get(f"{ui['base']}/get-artifact?{query}") == {"pairs": [1, 2]}


def _chromium(
    url: str, folder: Path, *flags: str, budget_ms: int, size: str = "1400,1000"
) -> subprocess.CompletedProcess:
    home = folder / "chromium-home"  # its profile and caches: nothing outside tmp_path
    home.mkdir(exist_ok=True)
    command = [
        shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-dev-shm-usage", "--no-first-run", f"--user-data-dir={home / 'profile'}",
        f"--window-size={size}", "--hide-scrollbars", f"--virtual-time-budget={budget_ms}",
        *flags, url,
    ]  # fmt: skip
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    env["XDG_CACHE_HOME"] = str(home / ".cache")
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)",
)
def test_the_ui_renders_the_comparison_of_the_two_runs(ui, runs, tmp_path):
    experiment_id, found = runs
    ids = [run["info"]["run_id"] for run in found]
    url = (
        f"{ui['base']}/#/compare-runs?runs={urllib.parse.quote(json.dumps(ids))}"
        f"&experiments={urllib.parse.quote(json.dumps([experiment_id]))}"
    )
    # the React app rendered the comparison: both runs, their params and metrics (the metrics
    # table renders its first rows only, alphabetical: data/..., eval/ner/...)
    wanted = [*RUN_NAMES, *ids, "Comparing 2 Runs", "eval/ner/avg_target"]
    for budget_ms in (20_000, 60_000, 120_000):  # more virtual time on a slow, busy machine
        dom = _chromium(url, tmp_path, "--dump-dom", budget_ms=budget_ms).stdout
        if all(text in dom for text in wanted):
            break
    assert [text for text in wanted if text not in dom] == [], dom[-2000:]

    screenshot = tmp_path / "ui-compare.png"
    done = _chromium(url, tmp_path, f"--screenshot={screenshot}", budget_ms=budget_ms)
    assert screenshot.exists(), done.stderr[-2000:]
    head = screenshot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(head[16:20]), int.from_bytes(head[20:24])) == (1400, 1000)
    _keep(screenshot)


def _keep(screenshot: Path) -> None:
    if keep := os.environ.get("BENCH_UI_SCREENSHOTS"):
        shutil.copyfile(screenshot, Path(keep) / screenshot.name)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)",
)
def test_the_runs_table_opens_on_the_scores_and_its_charts_on_each_task(ui, runs, tmp_path):
    """The address `bench ui` links to (while the store holds this one experiment; see above)
    opens the runs table with the runs' average target score per task, variant, setting and seed
    as columns; its Chart tab with a bar chart per task. The address is built here rather than
    asked of the server: test_file_artifact_locations_are_served adds a second experiment."""
    experiment_id, found = runs
    table = f"{ui['base']}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW}"
    scores = [  # as the REST API gives them; the table prints them whole
        repr(next(m["value"] for m in run["data"]["metrics"] if m["key"] == key))
        for run in found
        for key in ("eval/ner/avg_target", "eval/pos/avg_target")
    ]
    for budget_ms in (30_000, 60_000, 120_000):  # more virtual time on a slow, busy machine
        dom = _chromium(table, tmp_path, "--dump-dom", budget_ms=budget_ms).stdout
        if all(score in dom for score in scores):
            break
    assert all(score in dom for score in scores), (scores, dom[-3000:])
    assert "eval/pos/avg_target" in dom and "variant" in dom and "shared view" in dom
    for name, url, size in (
        ("ui-runs.png", table, "1800,600"), ("ui-charts.png", f"{table}&compareRunsMode=CHART",
                                             "1800,900"),
    ):  # fmt: skip
        screenshot = tmp_path / name
        _chromium(url, tmp_path, f"--screenshot={screenshot}", budget_ms=budget_ms, size=size)
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        _keep(screenshot)


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["ui", "--output", str(tmp_path / "store"), "--port", str(port)]
        done = subprocess.run(
            [sys.executable, "-m", "bench", *args], cwd=tmp_path, env=_env(),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and f"port {port}" in done.stderr, done.stderr
    assert "in use" in done.stderr and not done.stdout
    assert not (tmp_path / "store").exists()


def test_a_server_uri_is_printed_not_served(tmp_path):
    args = ["ui", "--output", str(tmp_path), "--tracking-uri", "http://mlflow.example:5000/"]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args], cwd=tmp_path, env=_env(),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("MLflow UI: http://mlflow.example:5000/#/experiments\n")
    assert list(tmp_path.iterdir()) == []


def test_the_hint_after_a_run_names_bench_ui(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hint = ui_hint(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}", "1", "abc")
    assert hint.splitlines()[0] == "view it with: python -m bench ui --output runs"
    assert "http://127.0.0.1:5000/#/experiments/1/runs/abc" in hint
    assert "--tracking-uri postgresql://h/db" in ui_hint("postgresql://h/db", "1", "abc")
    assert ui_hint("http://h:5000/", "1", "abc") == "open http://h:5000/#/experiments/1/runs/abc"


def test_a_view_tag_another_process_set_meanwhile_is_kept(tmp_path, monkeypatch):
    """Two sweep workers starting at once both find the experiment without its view tag; the
    second to write it finds the first's there (sqlite refuses the duplicate) and goes on."""
    from mlflow.exceptions import MlflowException

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first, second = (Tracker(uri, "demo", tmp_path / "artifacts") for _ in range(2))
    assert first.experiment_id == second.experiment_id

    def lose_the_race(experiment_id, key, value):
        first.show_results(["pos"])  # the other process writes it first
        raise MlflowException("UNIQUE constraint failed: experiment_tags.key")

    monkeypatch.setattr(second.client, "set_experiment_tag", lose_the_race)
    second.show_results(["pos"])
    assert VIEW_TAG in second.client.get_experiment(second.experiment_id).tags
