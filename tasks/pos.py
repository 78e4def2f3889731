"""Part-of-speech tagging: one tag per word, scored by accuracy."""

from bench.task import TASKS, Kind, TaskFamily

TASKS.add("pos", TaskFamily("pos", Kind.TOKEN, "accuracy", "part-of-speech tagging (UPOS-style)"))
