"""Named-entity recognition: BIO tags per word, scored by entity-level F1 (seqeval)."""

from bench.task import TASKS, Kind, TaskFamily

TASKS.add("ner", TaskFamily("ner", Kind.TOKEN, "f1", "named-entity recognition (BIO, entity F1)"))
