"""`bench params`: what each method trains on mBERT's shape, and how that grows with languages."""

from bench import params
from bench.cli import main
from bench.method import METHODS


def trained(method: str, languages: int) -> dict[str, int]:
    return {g.name: g.trained for g in params.count(method, "mbert-base", languages, 2)}


def test_madx_counts_one_language_adapter_per_language_and_one_task_adapter_per_task():
    ten, fifty = trained("madx", 10), trained("madx", 50)
    languages = "language adapters (MLM)"  # trained before the run, frozen in it
    per_language = (fifty[languages] - ten[languages]) / 40
    assert abs(per_language / 1e6 - 7.39) < 0.01  # reduction 2 + invertible adapter (~7.4 M)
    assert ten[languages] == 10 * per_language
    assert abs(ten["task adapters"] / 2 / 1e6 - 0.89) < 0.01  # reduction 16 (~0.9 M per task)
    assert ten["task adapters"] == fifty["task adapters"]
    assert ten["encoder"] == 0 and ten["heads"] == (7 + 17) * 769


def test_growth_table_shows_hyperx_nearly_flat_and_madx_linear(tmp_path, capsys):
    report = tmp_path / "params.md"
    methods = "full-ft,lora,hyperx,madx"
    args = ["params", "--method", methods, "--languages", "10,50", "--report", str(report)]
    assert main(args) == 0
    text = report.read_text()
    rows = {line.split("|")[1].strip(" `"): line for line in text.splitlines() if "| `" in line}
    assert set(rows) == set(methods.split(","))
    growth = {m: float(row.split("|")[-2].strip(" x")) for m, row in rows.items()}
    assert growth["full-ft"] == growth["lora"] == 1.0
    assert growth["hyperx"] < 1.01 and growth["madx"] > 4  # 50 / 10 languages
    assert "--languages 10,50" in text and "written to" in capsys.readouterr().out


def test_params_refuses_bad_language_counts(capsys):
    assert main(["params", "--method", "madx", "--languages", "50,10"]) == 2
    err = capsys.readouterr().err
    assert "'50,10'" in err and err.count("\n") == 1


def test_every_method_counts_on_the_demo_shape():
    for name in METHODS.names():
        groups = params.count(name, "demo", 7, 3)
        assert sum(g.trained for g in groups) > 0, name
