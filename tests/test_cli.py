import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "nope"], "unknown method 'nope'; known: adapter,"),
        (["--method", "ful-ft"], "unknown method 'ful-ft' (did you mean 'full-ft'?)"),
        (["--method", "dummy", "--setting", "zero-shot"], "unknown setting 'zero-shot'"),
        (["--method", "dummy", "--suite", "demoo"], "unknown suite 'demoo' (did you mean 'demo'?)"),
        (["--method", "dummy", "--tasks", "pos,dep"], "unknown task 'dep'"),
        (["--method", "dummy", "--lr", "-1"], "method.lr=-1.0 is invalid: must be > 0"),
        (["--method", "dummy", "--max-steps", "0"], "train.max_steps=0 is invalid: must be > 0"),
        (["--method", "dummy", "--shots", "-2"], "train.shots=-2 is invalid: must be > 0"),
        (["--method", "dummy", "--set", "train.batch_size=big"], "'big' is not a valid int"),
        (["--method", "dummy", "--set", "method.dropout=0.1"], "unknown option method.'dropout'"),
        (["--method", "dummy", "--set", "lr=0.1"], "--set 'lr=0.1' is invalid"),
        (["--method", "dummy", "--backbone-init", "zeros"], "backbone init 'zeros' is invalid"),
        (["--method", "dummy", "--seed", "x"], "argument --seed: invalid int value: 'x'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_run(tmp_path, capsys, args, message):
    out = tmp_path / "runs"
    try:
        code = main(["run", *args, "--output", str(out)])
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert message in err
    assert not (out / "mlflow.db").exists()


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
