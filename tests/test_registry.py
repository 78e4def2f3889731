import pytest

from bench.errors import BenchError
from bench.method import METHODS
from bench.registry import Registry
from bench.settings import SETTINGS
from bench.suites import SUITES
from bench.task import TASKS


def test_duplicate_names_are_refused():
    registry: Registry[int] = Registry("thing")
    registry.add("a", 1, aliases=("alpha",))
    with pytest.raises(ValueError, match="already registered"):
        registry.add("a", 2)
    with pytest.raises(ValueError, match="already registered"):
        registry.add("b", 2, aliases=("alpha",))


def test_unknown_name_lists_known_names_and_suggests():
    registry: Registry[int] = Registry("method")
    registry.add("full-ft", 1)
    registry.add("dummy", 2)
    with pytest.raises(BenchError) as error:
        registry.get("ful-ft")
    assert (
        str(error.value)
        == "unknown method 'ful-ft' (did you mean 'full-ft'?); known: dummy, full-ft"
    )


def test_alias_resolves_to_canonical_name():
    registry: Registry[int] = Registry("task")
    registry.add("pos", 1, aliases=("upos",))
    assert registry.get("upos") == 1
    assert registry.canonical("upos") == "pos"
    assert registry.names() == ["pos"]


def test_builtins_are_registered():
    assert {"adapter", "full-ft", "dummy"} <= set(METHODS.names())
    assert set(TASKS.names()) == {"mlm", "ner", "nli", "pos"}
    assert set(SETTINGS.names()) == {"few-shot", "mixed", "multi-task", "single-task", "zero-text"}
    assert "demo" in SUITES
