import subprocess
import sys
from pathlib import Path

from test_formats import CONLLU

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


HEAVY = ("torch", "transformers", "datasets", "mlflow", "optuna", "adapters", "peft")
PROBE = """
import sys
from bench.cli import main
code = main(sys.argv[1:])
print(code, *sorted(m for m in {heavy} if m in sys.modules))
"""


def test_names_options_and_listings_are_answered_before_heavy_libraries_load(tmp_path):
    """A typo must be answered in a blink: nothing heavy is imported before the checks."""
    data = tmp_path / "en.conllu"
    data.write_text(CONLLU)
    splits = ", ".join(f'{split} = "{data}"' for split in ("train", "dev", "test"))
    suite = tmp_path / "no-backbone.toml"
    suite.write_text(
        f'backbone = "{tmp_path / "no-model"}"\n[tasks.pos.files]\nen = {{ {splits} }}\n'
        '[settings.mixed]\ntrain = ["pos/en"]\n'
    )
    cases = [
        (["run", "--method", "dummy", "--suite", str(suite)], 2),  # no backbone there
        (["list", "--options"], 0),
        (["run", "--method", "hyperX"], 2),
        (["run", "--method", "lora", "--set", "method.rnk=4"], 2),
        (["sweep", "--method", "hyperx", "--setting", "mixd"], 2),
        (["compare", "--methods", "hyperx,adaptr"], 2),
        (["compare", "--methods", "hyperx", "--settings", "mixed,singel-task"], 2),
        (["run", "--method", "hyperx", "--setting", "mixed", "--shots", "5"], 2),
        (["run", "--method", "hyperx", "--suite", str(tmp_path / "missing.toml")], 2),
        (["params", "--method", "hyperxx"], 2),
        (["report", "--suite", "nope"], 2),
        (["plan", "--setting", "mixd"], 2),
    ]
    for argv, code in cases:
        done = subprocess.run(
            [sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv],
            capture_output=True, text=True, cwd=tmp_path,
        )  # fmt: skip
        assert done.stdout.splitlines()[-1].split() == [str(code)], (argv, done.stderr)


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


def test_the_startup_benchmark_times_each_answer_in_a_fresh_process():
    from bench import startup

    figures, others = startup.measure(1)
    assert [label for label, _ in figures] == [label for label, _, _ in startup.COMMANDS]
    assert all(len(seconds) == 1 and seconds[0] > 0 for _, seconds in figures)
    assert 0.0 <= others <= 1.0
    text = startup.render(figures, others=others, machine="a test machine", repeats=1)
    assert "| `bench list` | " in text and "| `import torch` alone, for scale | " in text
