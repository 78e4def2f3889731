"""The synthetic demo world: deterministic, labelled by its grammar, split without overlap."""

from collections import Counter

import pytest

from tasks import synthetic


def test_generation_is_deterministic_and_seeded():
    a = synthetic.World(0)  # a fresh world, not the cached one
    assert synthetic.world(0).tagged("qad", "dev") == a.tagged("qad", "dev")
    assert synthetic.world(0).nli("qag", "test") == a.nli("qag", "test")
    assert synthetic.world(0).text("qae", 50, offset=20) == a.text("qae", 70)[20:]
    assert synthetic.world(1).tagged("qad", "dev") != a.tagged("qad", "dev")


@pytest.mark.parametrize("language", synthetic.LANGUAGES)
def test_labels_follow_the_label_sets_and_bio_is_valid(language):
    rows = synthetic.world(0).tagged(language, "dev")
    assert len(rows) == synthetic.world(0).size("tagged", "dev")
    for row in rows:
        assert len(row["tokens"]) == len(row["pos"]) == len(row["ner"])
        assert set(row["pos"]) <= set(synthetic.POS_TAGS)
        assert set(row["ner"]) <= set(synthetic.NER_TAGS)
        for previous, tag in zip(["O", *row["ner"]], row["ner"], strict=False):
            if tag.startswith("I-"):
                assert previous[2:] == tag[2:], row  # I-X only continues an X entity
    entities = Counter(t[2:] for row in rows for t in row["ner"] if t.startswith("B-"))
    assert set(entities) == {"PER", "ORG", "LOC"}


@pytest.mark.parametrize("language", synthetic.LANGUAGES)
def test_nli_labels_are_balanced(language):
    labels = Counter(row["label"] for row in synthetic.world(0).nli(language, "train"))
    assert set(labels) == set(synthetic.NLI_LABELS)
    assert min(labels.values()) / max(labels.values()) > 0.8


def test_splits_are_different_draws():
    world = synthetic.world(0)
    train = {tuple(r["tokens"]) for r in world.tagged("qaa", "train")}
    test = [tuple(r["tokens"]) for r in world.tagged("qaa", "test")]
    assert sum(t in train for t in test) / len(test) < 0.05  # only very short sentences recur


def test_unknown_language_or_split_is_refused():
    with pytest.raises(ValueError, match="unknown language 'xyz'"):
        synthetic.world(0).tagged("xyz", "train")
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        synthetic.world(0).nli("qaa", "validation")


def test_the_world_mirrors_the_paper_layout():
    roles = Counter(p.role for p in synthetic.PROFILES.values())
    assert roles == {"main source": 1, "source": 2, "target": 4}
    targets = [p for p in synthetic.PROFILES.values() if p.role == "target"]
    assert any(not p.in_pretraining for p in targets)  # a target the backbone never saw
    assert any(p.in_pretraining for p in targets)
    assert set(synthetic.PRETRAIN_LANGUAGES) < set(synthetic.LANGUAGES)
