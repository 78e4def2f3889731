"""`bench export` and `bench import` carry a suite's runs and studies to another store."""

import json

import optuna
from mlflow import MlflowClient
from optuna.storages import JournalStorage

from bench.archive import ORIGIN_TAG
from bench.cli import main


def _runs(output):
    client = MlflowClient(f"sqlite:///{output / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("demo").experiment_id
    return client.search_runs([experiment], max_results=1000)


def test_an_exported_grid_imported_elsewhere_is_reused_whole(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    first, second, folder = tmp_path / "here", tmp_path / "there", tmp_path / "results"
    grid = ["compare", "--methods", "dummy", "--tune", "2", "--seeds", "2", "--run-average",
            "--selection", "source-dev,last", "--max-steps", "6", "--set", "train.eval_every=3",
            "--set", "train.eval_cap=20"]  # fmt: skip
    assert main([*grid, "--output", str(first), "--report", str(tmp_path / "a.md")]) == 0
    ran = _runs(first)
    assert main(["export", "--output", str(first), "--to", str(folder)]) == 0
    records = {p.parent.name: json.loads(p.read_text()) for p in folder.glob("runs/*/run.json")}
    assert set(records) == {r.info.run_id for r in ran}  # trials, studies, seeds, rules, average
    assert all((folder / "runs" / i / "artifacts" / "results.json.gz").is_file()
               for i, r in records.items() if "sweep.trials" not in r["tags"])  # fmt: skip
    journal = (folder / "studies.journal").read_bytes()
    assert main(["export", "--output", str(first), "--to", str(folder)]) == 0
    assert (folder / "studies.journal").read_bytes() == journal  # the same studies: left as is

    assert main(["import", str(folder), "--output", str(second)]) == 0
    assert f"imported {len(ran)} of {len(ran)} runs" in capsys.readouterr().out
    copied = _runs(second)
    assert len(copied) == len(ran)
    ids = {r.data.tags[ORIGIN_TAG]: r.info.run_id for r in copied}
    for run in copied:  # the same params and metrics; the run ids they name, the new ones
        record = records[run.data.tags[ORIGIN_TAG]]
        assert run.data.params == record["params"] and run.info.status == record["status"]
        assert run.data.metrics == {k: h[-1][2] for k, h in record["metrics"].items()}
        for key in ("mlflow.parentRunId", "same_training"):
            if key in record["tags"]:
                assert run.data.tags[key] == ids[record["tags"][key]]
        if "run_average" in record["tags"]:
            averaged = record["tags"]["run_average"].split(",")
            assert run.data.tags["run_average"] == ",".join(ids[i] for i in averaged)
    storage = f"sqlite:///{second / 'optuna.db'}"
    (study,) = optuna.get_all_study_summaries(storage)
    loaded = optuna.load_study(study_name=study.study_name, storage=storage)
    assert loaded.user_attrs["mlflow.parent_run_id"] in ids.values()
    assert len(loaded.trials) == 2

    # importing again adds nothing; exporting the copy writes the same records
    assert main(["import", str(folder), "--output", str(second)]) == 0
    assert f"imported 0 of {len(ran)} runs" in capsys.readouterr().out
    again = tmp_path / "again"
    assert main(["export", "--output", str(second), "--to", str(again)]) == 0
    for name, record in records.items():
        assert json.loads((again / "runs" / name / "run.json").read_text()) == record

    # a trial under way when the study is exported is queued again, with its values
    study = optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{first}/optuna.db")
    running = study.ask(fixed_distributions=study.trials[0].distributions)
    assert main(["export", "--output", str(first), "--to", str(folder)]) == 0
    journal = optuna.storages.journal.JournalFileBackend(str(folder / "studies.journal"))
    later = optuna.load_study(study_name=study.study_name, storage=JournalStorage(journal))
    assert [t.state.name for t in later.trials[2:]] == ["FAIL", "WAITING"]
    assert later.trials[3].params == running.params and running.params

    # the grid, tuning included, finds everything there: it trains nothing, and reports alike
    there = ["--output", str(second), "--report", str(tmp_path / "b.md"), "--reuse"]
    assert main([*grid, *there]) == 0
    assert len(_runs(second)) == len(ran)
    assert len(optuna.load_study(study_name=study.study_name, storage=storage).trials) == 2
    table = [(tmp_path / f).read_text().split("## Budgets")[0] for f in ("a.md", "b.md")]
    assert table[0].split("| method")[1] == table[1].split("| method")[1]
    # and `report` reads the imported predictions for its intervals
    report = ["report", "--output", str(second), "--baseline", "dummy", "--bootstrap", "20"]
    assert main([*report, "--report", str(tmp_path / "c.md")]) == 0
    assert "| `dummy` |" in (tmp_path / "c.md").read_text()


def test_import_refuses_a_folder_export_did_not_write(tmp_path, capsys):
    (tmp_path / "junk").mkdir()
    assert main(["import", str(tmp_path / "junk"), "--output", str(tmp_path / "runs")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "export.json is unreadable" in line and "not a folder `bench export` wrote" in line
    assert not (tmp_path / "runs" / "mlflow.db").exists()
