"""`python -m bench params`: what a method trains, on a backbone built from its config alone.

The backbone and the method's model are built on PyTorch's "meta" device: shapes without
storage, so an mBERT-sized count needs no weights, no download and next to no memory. The plan is
a stand-in for the paper's mixed setting: the first language has labels for every task, every
language has MLM text, every pair is evaluated.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    BertConfig,
    PretrainedConfig,
    PreTrainedModel,
)

from bench import backbone as demo_backbone
from bench import typology
from bench.errors import BenchError
from bench.method import METHODS, Backbone
from bench.request import Entry
from bench.runner import attention
from bench.settings import EvalPair, ModelPlan, Pair, TrainPair
from bench.task import TASKS, Task

# bert-base-multilingual-cased
SHAPES = {
    "mbert-base": {
        "vocab_size": 119547,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
    }
}
# label counts of the paper's data: WikiANN BIO (PER, ORG, LOC), UD's 17 UPOS tags, 3 NLI labels
LABELS = {"ner": 7, "pos": 17, "nli": 3, "mlm": 0}
LABELLED_TASKS = ("ner", "pos", "nli")


@dataclasses.dataclass(frozen=True)
class _Labels:
    """A stand-in data source: label names only (counting needs no data)."""

    count: int

    def labels(self) -> tuple[str, ...]:
        return tuple(f"label{i}" for i in range(self.count))


@dataclasses.dataclass(frozen=True)
class Group:
    name: str
    trained: int  # trained by the run, or by a stage before it (MAD-X's language adapters)
    total: int


def backbone_config(shape: str) -> PretrainedConfig:
    if shape in SHAPES:
        return BertConfig(**SHAPES[shape])
    path = demo_backbone.DEMO_DIR if shape == "demo" else Path(shape)
    if not (path / "config.json").is_file():
        valid = ", ".join([*SHAPES, "demo", "a model folder with config.json"])
        raise BenchError(f"--backbone-shape {shape!r} is invalid; valid: {valid}")
    return AutoConfig.from_pretrained(path)


def shaped_model(shape: str) -> PreTrainedModel:
    """A masked-LM backbone of `shape` with fresh weights (on the current default device)."""
    config = backbone_config(shape)
    return AutoModelForMaskedLM.from_config(config, **attention(config))


def stand_in_tasks(names: list[str] | tuple[str, ...]) -> dict[str, Task]:
    return {n: Task(TASKS.get(n), _Labels(LABELS[n])) for n in names}


def stand_in_plan(languages: int, tasks: int) -> tuple[ModelPlan, tuple[str, ...]]:
    if not 1 <= tasks <= len(LABELLED_TASKS):
        raise BenchError(f"--tasks {tasks} is invalid: must be 1 to {len(LABELLED_TASKS)}")
    if languages < 1:
        raise BenchError(f"--languages {languages} is invalid: must be >= 1")
    codes = [f"l{i:02d}" for i in range(languages)]
    names = LABELLED_TASKS[:tasks]
    plan = ModelPlan(
        name="params",
        train=tuple(TrainPair(Pair(t, codes[0]), "train") for t in names),
        mlm=tuple(TrainPair(Pair("mlm", c), "train") for c in codes),
        selection=(),
        eval=tuple(EvalPair(Pair(t, c), "test", "target") for t in names for c in codes),
    )
    return plan, names


def count(
    method_name: str, shape: str, languages: int, tasks: int, options: dict | None = None
) -> list[Group]:
    """Trained and total parameters per part of the method's model (tied weights once), with
    the method's `options` (`{"language_source": "typology"}`) set."""
    method = METHODS.get(method_name)
    config = method.Config().with_values(options or {})
    plan, names = stand_in_plan(languages, tasks)
    task_names = [*names, *(["mlm"] if config.mlm else [])]
    with torch.device("meta"):
        backbone = Backbone(
            shape, shaped_model(shape), tokenizer=None, init="random",
            typology=lambda language: (0.0,) * typology.SIZE,  # stand-in languages: any vector
        )  # fmt: skip
        built = method.build(backbone, plan, stand_in_tasks(task_names), config)
    groups: dict[str, list[int]] = {}
    for name, parameter in built.named_parameters():  # a shared tensor is yielded once
        counts = groups.setdefault(built.part(name), [0, 0])
        trained = parameter.requires_grad or built.stage_of(name) is not None
        counts[0] += parameter.numel() if trained else 0
        counts[1] += parameter.numel()
    return [Group(name, trained, total) for name, (trained, total) in groups.items()]


def render(groups: list[Group], *, method: str, shape: str, languages: int, tasks: int) -> str:
    rows = [(g.name, g.trained, g.total) for g in groups]
    rows.append(("all", sum(g.trained for g in groups), sum(g.total for g in groups)))
    width = max(len(name) for name, _, _ in rows)
    lines = [
        f"{method} on {shape} ({languages} languages, {tasks} labelled tasks)",
        f"{'part'.ljust(width)}  {'trained':>24}  {'total':>24}",
    ]
    for name, trained, total in rows:
        lines.append(f"{name.ljust(width)}  {_millions(trained):>24}  {_millions(total):>24}")
    return "\n".join(lines)


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f} M ({n:,})" if n >= 10_000 else f"{n:,}"


def growth(
    methods: list[Entry], shape: str, languages: list[int], tasks: int
) -> dict[str, list[int]]:
    """Method (its label) -> trained parameters at each language count (a model per count)."""
    return {
        e.label: [
            sum(g.trained for g in count(e.method, shape, n, tasks, e.options)) for n in languages
        ]
        for e in methods
    }


def render_growth(
    trained: dict[str, list[int]], *, shape: str, languages: list[int], tasks: int, command: str
) -> str:
    """A markdown table of how each method's trained parameters grow with languages."""
    first, last = languages[0], languages[-1]
    header = [f"{n} languages" for n in languages]
    lines = [
        f"# Trained parameters as languages grow ({shape})",
        "",
        f"Regenerate: `{command}`",
        "",
        f"Backbone shape {shape}, {tasks} labelled tasks ({', '.join(LABELLED_TASKS[:tasks])}; "
        "label counts of WikiANN, UD and XNLI). Every language has unlabelled text and is",
        "evaluated, as in the paper's mixed setting. *Trained* counts what the run trains plus",
        "what a method trains before it (MAD-X's language adapters, one per language); frozen",
        "backbone weights are not counted. Built on PyTorch's meta device: shapes, no weights.",
        "",
        "| method | " + " | ".join(header) + " | per added language | growth |",
        "|---|" + "---|" * (len(header) + 2),
    ]
    for method, counts in trained.items():
        per = (counts[-1] - counts[0]) / (last - first) if last != first else 0.0
        cells = [_millions(n) for n in counts]
        ratio = f"x{counts[-1] / counts[0]:.2f}" if counts[0] else "-"
        lines.append(f"| `{method}` | " + " | ".join(cells) + f" | {_per(per)} | {ratio} |")
    return "\n".join(lines) + "\n"


def _per(n: float) -> str:
    return f"{n / 1e6:.2f} M" if n >= 10_000 else f"{n:,.0f}"
