"""Natural language inference: a premise and a hypothesis, scored by accuracy."""

from bench.task import TASKS, Kind, TaskFamily

TASKS.add(
    "nli",
    TaskFamily("nli", Kind.SENTENCE, "accuracy", "natural language inference (3 classes)"),
)
