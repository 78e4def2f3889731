import pytest

from bench.metrics import accuracy, entity_f1
from bench.references import References
from bench.task import Task


def test_token_and_sentence_accuracy():
    assert accuracy([["A", "B"], ["C"]], [["A", "X"], ["C"]]) == pytest.approx(200 / 3)
    assert accuracy(["x", "y", "y", "z"], ["x", "y", "z", "z"]) == 75.0
    with pytest.raises(ValueError):
        accuracy([["A"]], [["A", "B"]])


def test_entity_f1_is_entity_level():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    # one of two entities right, one of two predicted right: F1 = 0.5
    pred = [["B-PER", "I-PER", "O", "B-ORG"]]
    assert entity_f1(gold, pred) == pytest.approx(50.0)
    # a partial span is not an entity match
    assert entity_f1([["B-PER", "I-PER"]], [["B-PER", "O"]]) == 0.0


def test_references_majority_and_lookup(demo):
    task: Task = demo.task("pos")
    train = [
        {"tokens": ["run", "the", "run"], "tags": ["VERB", "DET", "NOUN"]},
        {"tokens": ["the", "dog", "run"], "tags": ["DET", "NOUN", "NOUN"]},
    ]
    refs = References(task, train)
    assert refs.majority == "NOUN"
    assert refs.lookup == {"run": "NOUN", "the": "DET", "dog": "NOUN"}
    scores = refs.scores([{"tokens": ["the", "cat"], "tags": ["DET", "NOUN"]}])
    assert scores == {"majority": 50.0, "lookup": 100.0}  # unseen "cat" gets the majority tag
