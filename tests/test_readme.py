"""The README's "Add a method" example is real code: it loads and runs end to end."""

import importlib.util
import re
from pathlib import Path

from bench import plugins, runner
from bench.cli import main
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


def test_a_method_outside_the_repository_loads_with_plugin(tmp_path, capsys):
    text = README.read_text()
    section = text[text.index("## Add a method") : text.index("## Add a task")]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    module_path = tmp_path / "bitfit_plugin.py"
    module_path.write_text(code.replace('name = "bitfit"', 'name = "bitfit-plugin"'))
    out = tmp_path / "runs"
    args = ["run", "--plugin", str(module_path), "--method", "bitfit-plugin", "--no-progress"]
    args += ["--setting", "multi-task", "--max-steps", "2", "--eval-every", "2"]
    assert main([*args, "--set", "train.batch_size=8", "--output", str(out)]) == 0
    assert "bitfit-plugin" in capsys.readouterr().out
    assert main(["list", "--plugin", str(module_path)]) == 0
    assert "bitfit-plugin" in capsys.readouterr().out


def test_a_missing_plugin_is_one_line_and_exit_2(tmp_path, capsys):
    args = ["run", "--plugin", str(tmp_path / "nope.py"), "--method", "dummy"]
    assert main([*args, "--output", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.py" in err
    assert not (tmp_path / "runs" / "mlflow.db").exists()


def test_an_installed_package_registers_methods_by_entry_point(tmp_path, monkeypatch):
    text = README.read_text()
    section = text[text.index("## Add a method") : text.index("## Add a task")]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    package = tmp_path / "bench_entry_demo"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "bitfit.py").write_text(code.replace('name = "bitfit"', 'name = "bitfit-ep"'))
    info = tmp_path / "bench_entry_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-entry-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[bench.methods]\nbitfit = bench_entry_demo.bitfit\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.load_entry_points()
    assert "bitfit-ep" in METHODS
