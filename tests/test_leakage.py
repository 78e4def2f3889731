"""The leakage guard: every rule broken by a hand-built Plan, the built-in settings passing it,
and a leaking suite file refused by `bench plan` and `bench run` before any run is created."""

import dataclasses

import pytest
from shared_data import SHARED, needs_shared
from test_suitefile import ROOT, two_language_files, two_language_suite

from bench.cli import main
from bench.errors import BenchError
from bench.leakage import check
from bench.settings import SETTINGS, EvalPair, Pair, Plan, TrainPair, _excluded

SETTING_NAMES = ("single-task", "multi-task", "mixed", "few-shot")
QAA_POS, QAD_POS, QAB_NER = Pair("pos", "qaa"), Pair("pos", "qad"), Pair("ner", "qab")
FIRST_TEN = tuple(range(10))


def build(suite, setting, seed=0, **train):
    config = suite.train.with_values(train)
    return SETTINGS.get(setting).build(suite, seed, config), config


def edit(plan: Plan, **changes) -> Plan:
    """`plan` with a field of every model changed: `train=added(TrainPair(...))`."""
    models = tuple(
        dataclasses.replace(
            model, **{name: change(getattr(model, name)) for name, change in changes.items()}
        )
        for model in plan.models
    )
    return dataclasses.replace(plan, models=models)


def added(*items):
    return lambda old: (*old, *items)


def replaced(pair: Pair, *items):
    """Every item of `pair` dropped, `items` added."""
    return lambda old: (*(item for item in old if item.pair != pair), *items)


def refused(plan: Plan, suite, config) -> str:
    with pytest.raises(BenchError) as caught:
        check(plan, suite, config)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("seed", [0, 1, 2, 7])
@pytest.mark.parametrize("setting", SETTING_NAMES)
def test_built_in_settings_pass_on_the_demo_suite(demo, setting, seed):
    plan, config = build(demo, setting, seed)
    check(plan, demo, config)
    pos_only = demo.restricted(("pos",))  # the NER source qab becomes a POS target
    plan, config = build(pos_only, setting, seed)
    check(plan, pos_only, config)


@pytest.mark.parametrize("shots", [1, 10, 5000])  # 5000: more than a target's train split holds
def test_few_shot_passes_with_any_number_of_shots(demo, shots):
    plan, config = build(demo, "few-shot", shots=shots)
    drawn = [t for t in plan.models[0].train if t.indices is not None]
    assert drawn and all(0 < len(t.indices) <= shots for t in drawn)
    check(plan, demo, config)


def test_few_shot_shots_are_excluded_where_evaluation_reads_their_split(demo):
    plan, config = build(demo, "few-shot", seed=3)
    shots = {t.pair: t.indices for t in plan.models[0].train if t.indices is not None}

    def on_train(excluded):
        return lambda old: tuple(
            dataclasses.replace(e, split="train", exclude=excluded(shots[e.pair]))
            if e.pair in shots
            else e
            for e in old
        )

    check(edit(plan, eval=on_train(lambda s: _excluded(s, "train", "train"))), demo, config)
    leaking = edit(plan, eval=on_train(lambda s: s[1:]))  # one shot left in
    message = refused(leaking, demo, config)
    first = next(e for e in plan.models[0].eval if e.pair in shots)
    assert (
        f"evaluates {first.pair}@train, which holds 1 example it trains on (the first: index "
        in message
    )
    assert f"index {shots[first.pair][0]})" in message


@needs_shared
@pytest.mark.parametrize("seed", [0, 3])
def test_shared_suite_passes(monkeypatch, capsys, seed):
    monkeypatch.setenv("BENCH_DATA_DIR", str(SHARED))
    monkeypatch.setenv("BENCH_E5_DIR", str(ROOT / "backbones" / "demo"))  # plan reads config.json
    args = ["plan", "--suite", str(ROOT / "suites" / "shared.toml"), "--seed", str(seed)]
    assert main(args) == 0
    assert (
        "selection    pos: eng tur | ner: hau swa yor | nli: quy  [dev split]"
        in capsys.readouterr().out
    )


# case -> (setting, what every model gets changed, what the error says)
BROKEN = {
    "training on a test split": (
        "mixed",
        {"train": added(TrainPair(QAA_POS, "test"))},
        "leakage: setting mixed, model all trains on pos/qaa@test, a test split",
    ),
    "MLM on a test split": (
        "mixed",
        {"mlm": added(TrainPair(Pair("ner", "qad"), "test"))},
        "model all trains on ner/qad@test, a test split",
    ),
    "zero-shot training on a target": (
        "mixed",
        {"train": added(TrainPair(QAD_POS, "train"))},
        "leakage: setting mixed, model all trains on pos/qad@train, a target pair it evaluates",
    ),
    "zero-shot training on a target's dev split": (
        "multi-task",
        {"train": added(TrainPair(QAD_POS, "dev"))},
        "setting multi-task, model all trains on pos/qad@dev, a target pair it evaluates",
    ),
    "zero-shot training on shots of a target": (
        "mixed",
        {"train": added(TrainPair(QAD_POS, "train", None, (3, 4)))},
        "model all trains on pos/qad@train, a target pair it evaluates",
    ),
    "few-shot training on all of a target": (
        "few-shot",
        {"train": added(TrainPair(QAD_POS, "dev"))},
        "setting few-shot, model all trains on all of pos/qad@dev, a target pair it evaluates",
    ),
    "few-shot training on more shots than train.shots": (
        "few-shot",
        {"train": replaced(QAD_POS, TrainPair(QAD_POS, "train", None, (*FIRST_TEN, 10)))},
        "model all trains on 11 examples of pos/qad, a target pair it evaluates; "
        "few-shot allows train.shots=10",
    ),
    "few-shot shots over two training pairs": (
        "few-shot",
        {"train": added(TrainPair(QAD_POS, "dev", None, (0,)))},
        "model all trains on 11 examples of pos/qad, a target pair",
    ),
    "selection on a target": (
        "mixed",
        {"selection": added(EvalPair(QAD_POS, "dev", "source"))},
        "leakage: setting mixed, model all selects on pos/qad@dev, a target pair it evaluates",
    ),
    "few-shot selection on a target it has shots of": (
        "few-shot",
        {"selection": added(EvalPair(QAD_POS, "dev", "source"))},
        "model all selects on pos/qad@dev, a target pair it evaluates",
    ),
    "few-shot selection on a pair it only has shots of": (
        "few-shot",
        {"eval": replaced(QAD_POS), "selection": added(EvalPair(QAD_POS, "dev", "source"))},
        "model all selects on pos/qad@dev, a pair it trains on only through shots",
    ),
    "selection on a test split": (
        "mixed",
        {"selection": added(EvalPair(QAA_POS, "test", "source"))},
        "model all selects on pos/qaa@test, not a dev split",
    ),
    "selection on a held-out slice of train": (
        "mixed",
        {
            "train": replaced(QAA_POS, TrainPair(QAA_POS, "train", None, FIRST_TEN)),
            "selection": replaced(QAA_POS, EvalPair(QAA_POS, "train", "source", FIRST_TEN)),
        },
        "model all selects on pos/qaa@train, not a dev split; "
        "model selection uses source dev data only",
    ),
    "selection on a pair it does not train on": (
        "single-task",
        {"selection": added(EvalPair(Pair("pos", "qaa"), "dev", "source"))},
        "setting single-task, model ner selects on pos/qaa@dev, a pair it does not train on",
    ),
    "selection on a pair marked target": (
        "mixed",
        {"selection": added(EvalPair(QAB_NER, "dev", "target"))},
        "model all selects on ner/qab@dev, a target pair it evaluates",
    ),
    "selection on examples it trains on": (
        "mixed",
        {
            "train": added(TrainPair(QAA_POS, "dev", None, FIRST_TEN)),
            "selection": replaced(QAA_POS, EvalPair(QAA_POS, "dev", "source", tuple(range(8)))),
        },
        "model all selects on pos/qaa@dev, which holds 2 examples it trains on "
        "(the first: index 8)",
    ),
    "evaluation on the whole split it trains on": (
        "mixed",
        {"eval": added(EvalPair(QAB_NER, "train", "source"))},
        "model all evaluates ner/qab@train, which holds 2000 examples it trains on "
        "(the first: index 0)",
    ),
    "evaluation past a capped training pair's exclusion": (
        "mixed",
        {
            "train": replaced(QAB_NER, TrainPair(QAB_NER, "train", 5)),
            "eval": added(EvalPair(QAB_NER, "train", "source", (0, 1, 2, 3))),
        },
        "model all evaluates ner/qab@train, which holds 1 example it trains on "
        "(the first: index 4)",
    ),
    "evaluation past capped indices": (
        "mixed",
        {
            "train": replaced(QAA_POS, TrainPair(QAA_POS, "train", 3, (20, 10, 30, 40))),
            "eval": added(EvalPair(QAA_POS, "train", "source", (10, 20))),
        },
        "model all evaluates pos/qaa@train, which holds 1 example it trains on "
        "(the first: index 30)",
    ),
    "a missing split": (
        "mixed",
        {"train": added(TrainPair(QAA_POS, "validation"))},
        "setting mixed, model all: pos/qaa has no 'validation' split (it has: train, dev, test)",
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_each_rule_refuses_a_plan_naming_the_pair(demo, case):
    setting, changes, message = BROKEN[case]
    plan, config = build(demo, setting)
    check(plan, demo, config)  # the plan passes before it is changed
    assert message in refused(edit(plan, **changes), demo, config)


def test_what_is_excluded_or_capped_away_passes(demo):
    plan, config = build(demo, "mixed")
    capped = edit(
        plan,
        train=replaced(QAA_POS, TrainPair(QAA_POS, "train", 3, (20, 10, 30, 40))),  # 20, 10, 30
        eval=added(EvalPair(QAA_POS, "train", "source", (10, 20, 30))),
    )
    check(capped, demo, config)


def test_a_missing_split_is_an_error_when_data_is_read(demo):
    with pytest.raises(
        BenchError, match=r"^pos/qaa has no 'validation' split \(it has: train, dev, test\)$"
    ):
        demo.task("pos").load("qaa", "validation")


@pytest.fixture()
def leaky_suite(tmp_path):
    """A suite file over files written here whose one setting the test fills in: POS in
    English (train, dev, test) and German (dev and test: a target), NER in German."""
    data = tmp_path / "data"
    two_language_files(data, en_count=5)  # 10 sentences a split
    german_pos = {"dev": "en-dev.conllu", "test": "en-test.conllu"}
    text = two_language_suite(data, german_pos, backbone="demo")
    path = tmp_path / "leaky.toml"

    def write(train: list[str], select: list[str], setting: str = "mixed"):
        pairs = f"[settings.{setting}]\ntrain = {train!r}\nselect = {select!r}\n"
        path.write_text(text + pairs.replace("'", '"'))
        return path

    return write


LEAKS = {
    "selection on a target": (
        ["pos/en", "ner/de"],
        ["pos/en", "pos/de@dev"],
        "leakage: setting mixed, model all selects on pos/deu@dev, a target pair it evaluates",
    ),
    "selection on what is trained": (
        ["pos/en@dev[:4]", "ner/de"],
        ["pos/en@dev[2:]", "ner/de"],
        "leakage: setting mixed, model all selects on pos/eng@dev, which holds 2 examples it "
        "trains on (the first: index 2)",
    ),
    "selection on held-out train": (
        ["pos/en@train[:4]", "ner/de"],
        ["pos/en@train[4:]", "ner/de"],
        "leakage: setting mixed, model all selects on pos/eng@train, not a dev split",
    ),
    "a missing train split": (
        ["pos/en", "pos/de"],
        ["pos/en"],
        "pos/deu@train: pos/deu has no 'train' split (it has: dev, test)",
    ),
}


@pytest.mark.parametrize("case", LEAKS)
def test_a_leaking_suite_file_is_refused_before_any_run(leaky_suite, tmp_path, capsys, case):
    train, select, message = LEAKS[case]
    suite = str(leaky_suite(["pos/en@dev[:4]", "ner/de"], ["pos/en@dev[4:]", "ner/de"]))
    assert main(["plan", "--suite", suite]) == 0  # the same suite, without the leak
    capsys.readouterr()
    suite = str(leaky_suite(train, select))
    out = tmp_path / "runs"
    for args in (["plan"], ["run", "--method", "dummy", "--output", str(out), "--no-progress"]):
        assert main([*args, "--suite", suite]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
        assert message in err
    assert not out.exists()  # no MLflow store, no run, no cache


def test_a_spelled_out_few_shot_source_on_a_slice_of_dev_is_no_shot(leaky_suite, capsys):
    """As the shared suite's English POS: trained on dev[:4], selected on dev[4:]."""
    suite = leaky_suite(["pos/en@dev[:4]", "ner/de"], ["pos/en@dev[4:]", "ner/de"], "few-shot")
    assert main(["plan", "--suite", str(suite), "--setting", "few-shot"]) == 0
    assert "pos: eng (4 of dev) | ner: deu  [dev, train split]" in capsys.readouterr().out
