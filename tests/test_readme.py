"""The README's "Add a method" example is real code: it loads and runs end to end."""

import importlib.util
import re
from pathlib import Path

from bench import runner
from bench.method import METHODS

README = Path(__file__).resolve().parent.parent / "README.md"


def test_add_a_method_example_runs(tmp_path):
    text = README.read_text()
    section = text[text.index("## Add a method") : text.index("## Add a task")]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    module_path = tmp_path / "bitfit.py"
    module_path.write_text(code)
    spec = importlib.util.spec_from_file_location("readme_bitfit", module_path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert "bitfit" in METHODS
    request = runner.Request(
        method="bitfit", setting="multi-task", output=tmp_path / "runs", progress=False,
        train={"max_steps": 4, "eval_every": 4, "batch_size": 8},
    )  # fmt: skip
    prepared = runner.prepare(request)
    result = runner.execute(prepared)
    assert 0 < result.metrics["params/trainable"] < result.metrics["params/total"]
