"""Each demo task is learnable in-language: full fine-tuning on the main source language scores
far above the majority class on that language's test split."""

import pytest

from bench import runner
from bench.cli import main


@pytest.mark.slow
def test_every_demo_task_is_learnable_in_language(tmp_path, demo):
    request = runner.Request(
        method="full-ft", setting="multi-task", output=tmp_path, progress=False,
        train={"max_steps": 300, "eval_every": 300},
    )  # fmt: skip
    result = runner.execute(runner.prepare(request))
    scores = {r.task: r for r in result.pairs if r.language == demo.main_source}
    assert scores["pos"].score > scores["pos"].references["majority"] + 50
    assert scores["pos"].score > 90
    assert scores["ner"].score > 70  # entity F1; majority ("O" everywhere) scores 0
    assert scores["nli"].score > scores["nli"].references["majority"] + 25


def test_transfer_report_is_written(tmp_path, demo, capsys):
    report = tmp_path / "transfer.md"
    args = ["transfer", "--seeds", "1", "--max-steps", "4", "--output", str(tmp_path / "runs")]
    assert main([*args, "--report", str(report)]) == 0
    text = report.read_text()
    assert "python -m bench transfer --seeds 1 --max-steps 4" in text
    rows = [line for line in text.splitlines() if line.startswith("| q")]
    assert len(rows) == len(demo.languages)
    assert all(line.count("|") == 8 for line in rows)
