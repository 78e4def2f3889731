import subprocess
import sys
from pathlib import Path

from bench.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_exit_code_from_the_command_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--method", "nope", "--output", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: unknown method 'nope'; known: adapter,")


def test_list_is_generated_from_the_registries(capsys):
    assert main(["list", "--options"]) == 0
    out = capsys.readouterr().out
    for name in (
        "hyperx",
        "hyperx-small",
        "full-ft",
        "dummy",
        "pos",
        "ner",
        "nli",
        "mlm",
        "mixed",
        "few-shot",
        "demo",
    ):
        assert name in out
    assert "train.max_steps=" in out and "method.lr=" in out


def test_plan_prints_the_mixed_plan(capsys, demo):
    assert main(["plan", "--setting", "mixed"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Plan: suite demo, setting mixed, seed 0")
    train = next(line for line in out.splitlines() if line.strip().startswith("train"))
    for language, task in demo.extra_sources.items():
        assert language in train.split(f"{task}:")[1].split("|")[0]


def test_plan_as_json(capsys):
    import json

    assert main(["plan", "--setting", "few-shot", "--shots", "3", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    shots = [t for t in plan["models"][0]["train"] if t["indices"] is not None]
    assert shots and all(len(t["indices"]) == 3 for t in shots)
