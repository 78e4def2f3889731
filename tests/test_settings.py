import pytest

from bench.compare import _request
from bench.errors import BenchError
from bench.request import parse_methods
from bench.settings import SETTINGS, Pair, check_read, ignored


def build(demo, setting, seed=0, **train):
    return SETTINGS.get(setting).build(demo, seed, demo.train.with_values(train))


def test_single_task_trains_one_model_per_task_on_the_main_source(demo):
    plan = build(demo, "single-task")
    assert [m.name for m in plan.models] == list(demo.labelled_tasks)
    for model in plan.models:
        assert [t.pair for t in model.train] == [Pair(model.name, demo.main_source)]
        assert {e.pair.task for e in model.eval} == {model.name}
        assert {e.pair.language for e in model.eval} == set(demo.languages)


def test_mixed_adds_extra_sources_and_evaluates_unseen_combinations(demo):
    plan = build(demo, "mixed")
    (model,) = plan.models
    trained = {t.pair for t in model.train}
    expected = {Pair(t, demo.main_source) for t in demo.labelled_tasks}
    expected |= {Pair(task, lang) for lang, task in demo.extra_sources.items()}
    assert trained == expected
    roles = {e.pair: e.role for e in model.eval}
    assert len(roles) == len(demo.labelled_tasks) * len(demo.languages)
    for language, task in demo.extra_sources.items():
        assert roles[Pair(task, language)] == "source"
        other = next(t for t in demo.labelled_tasks if t != task)
        assert roles[Pair(other, language)] == "target"  # the unseen task-language combination
    assert all(
        roles[Pair(t, lang)] == "target" for t in demo.labelled_tasks for lang in demo.targets
    )


@pytest.mark.parametrize("setting", ["single-task", "multi-task", "mixed", "few-shot"])
def test_model_selection_uses_source_dev_data_only(demo, setting):
    for model in build(demo, setting).models:
        assert model.selection
        for e in model.selection:
            assert e.split == "dev"
            assert e.pair.language not in demo.targets
        assert all(e.split == "test" for e in model.eval)
        assert {t.pair.language for t in model.mlm} == set(demo.languages)


def test_few_shot_draws_k_train_examples_per_target_pair_with_the_seed(demo):
    plan = build(demo, "few-shot", shots=7)
    shots = [t for t in plan.models[0].train if t.indices is not None]
    assert {t.pair for t in shots} == {
        Pair(t, lang) for t in demo.labelled_tasks for lang in demo.targets
    }
    assert all(len(t.indices) == 7 and t.split == "train" for t in shots)
    same = [t for t in build(demo, "few-shot", shots=7).models[0].train if t.indices is not None]
    other = [t for t in build(demo, "few-shot", seed=1, shots=7).models[0].train if t.indices]
    assert same == shots
    assert [t.indices for t in other] != [t.indices for t in shots]
    # the shots stay target pairs, evaluated on test, which shares no example with train
    roles = {e.pair: e for e in plan.models[0].eval}
    assert all(roles[t.pair].role == "target" and roles[t.pair].split == "test" for t in shots)


def test_plan_renders_every_pair(demo):
    lines = build(demo, "mixed").render().splitlines()
    assert lines[0] == "Plan: suite demo, setting mixed, seed 0"
    evaluated = " ".join(line for line in lines if line.strip().startswith("eval"))
    for task in demo.labelled_tasks:
        assert evaluated.count(f"{task}:") == 2  # a source group and a target group
    assert "pos: qab qad qae qaf qag" in evaluated


def test_restricting_tasks_keeps_every_language(demo):
    pos_only = demo.restricted(("pos",))
    assert pos_only.labelled_tasks == ("pos",)
    assert set(pos_only.languages) == set(demo.languages)
    plan = build(pos_only, "mixed")
    (model,) = plan.models
    assert {e.pair.task for e in model.eval} == {"pos"}
    assert {e.pair.language for e in model.eval} == set(demo.languages)


def test_an_option_only_another_setting_reads_is_refused_or_left_out_of_its_cells():
    check_read({"shots": 3, "max_steps": 5}, ["few-shot"])
    check_read({"shots": 3}, ["mixed", "few-shot"])  # a grid: few-shot reads it
    with pytest.raises(BenchError, match=r"train.shots=3 does nothing in setting 'mixed'"):
        check_read({"shots": 3}, ["mixed"])
    assert ignored({"shots": 3, "max_steps": 5}, "mixed") == {"shots"}
    assert ignored({"shots": 3, "max_steps": 5}, "few-shot") == set()
    grid = {"suite": "demo", "output": None, "train": {"shots": 3, "max_steps": 5}, "plugins": ()}
    entry = parse_methods("dummy")[0]
    assert _request(entry, "mixed", 0, grid).train == {"max_steps": 5}
    assert _request(entry, "few-shot", 0, grid).train == {"shots": 3, "max_steps": 5}
