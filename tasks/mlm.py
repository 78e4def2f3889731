"""Masked language modelling on unlabelled text: how target languages without labels are seen."""

from bench.task import TASKS, Kind, TaskFamily

TASKS.add("mlm", TaskFamily("mlm", Kind.MLM, "", "masked language modelling on unlabelled text"))
