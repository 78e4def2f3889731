"""Typed, validated configuration.

Every option is a dataclass field with a default, a type and help text; constraints live in the
field's metadata and are checked when the config is built, so an invalid value never reaches a run.
Values arriving as strings (from the command line) are converted by the field's type.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, ClassVar, Self

from bench.errors import BenchError


def option(
    default: Any,
    help: str,
    *,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A config field: default, help text and the constraints `validate` enforces."""
    metadata = {"help": help, "gt": gt, "ge": ge, "le": le, "choices": choices}
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of every config section. Subclasses set `section` (the prefix of their keys)."""

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            _check(
                f"{self.section}.{field.name}", getattr(self, field.name), hints[field.name], field
            )

    @classmethod
    def keys(cls) -> list[str]:
        return [f"{cls.section}.{field.name}" for field in dataclasses.fields(cls)]

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(key, default, help) for every option, for `bench list` and the README."""
        return [
            (f"{cls.section}.{f.name}", repr(f.default), f.metadata.get("help", ""))
            for f in dataclasses.fields(cls)
        ]

    def described(self) -> list[tuple[str, str, str]]:
        """(key, value, help) for every option, with this config's values; a value that is not
        the default says so (`bench list --options --suite X`)."""
        rows = []
        for (key, default, text), value in zip(self.describe(), self.flat().values(), strict=True):
            shown = repr(value)
            rows.append((key, shown, text if shown == default else f"{text} [default {default}]"))
        return rows

    def with_values(self, values: dict[str, Any]) -> Self:
        """A copy with `values` (field name -> value or string) applied and validated."""
        hints = typing.get_type_hints(type(self))
        names = {f.name for f in dataclasses.fields(self)}
        converted = {}
        for name, value in values.items():
            if name not in names:
                valid = ", ".join(self.keys())
                close = difflib.get_close_matches(name, sorted(names), n=1)
                hint = f" (did you mean {self.section}.{close[0]}?)" if close else ""
                raise BenchError(f"unknown option {self.section}.{name}{hint}; valid: {valid}")
            converted[name] = _convert(f"{self.section}.{name}", value, hints[name])
        return dataclasses.replace(self, **converted)

    def flat(self) -> dict[str, Any]:
        return {f"{self.section}.{k}": v for k, v in dataclasses.asdict(self).items()}


def _convert(key: str, value: Any, hint: Any) -> Any:
    if not isinstance(value, str):
        return value
    base = _base_type(hint)
    if value.lower() in ("none", "null") and _allows_none(hint):
        return None
    try:
        if base is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        return base(value)
    except ValueError:
        raise BenchError(f"{key}={value!r} is not a valid {base.__name__}") from None


def _check(key: str, value: Any, hint: Any, field: dataclasses.Field) -> None:
    if value is None:
        if _allows_none(hint):
            return
        raise BenchError(f"{key} must be set")
    base = _base_type(hint)
    ok = isinstance(value, base) and not (base is int and isinstance(value, bool))
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise BenchError(f"{key}={value!r} must be a {base.__name__}")
    meta = field.metadata
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise BenchError(f"{key}={value!r} must be a finite number")
        for name, symbol, holds in _BOUNDS:
            limit = meta.get(name)
            if limit is not None and not holds(value, limit):
                raise BenchError(f"{key}={value!r} is invalid: must be {symbol} {limit}")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise BenchError(f"{key}={value!r} is invalid; valid: {', '.join(choices)}")


_BOUNDS = (
    ("gt", ">", lambda v, limit: v > limit),
    ("ge", ">=", lambda v, limit: v >= limit),
    ("le", "<=", lambda v, limit: v <= limit),
)


def _base_type(hint: Any) -> type:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return args[0]
    return hint


def _allows_none(hint: Any) -> bool:
    return type(None) in typing.get_args(hint)


SELECTION_RULES = ("source-dev", "last", "average")  # `bench.selection`


@dataclasses.dataclass(frozen=True)
class TrainConfig(Config):
    """The training budget and loop settings shared by every method. Suites set the defaults."""

    section: ClassVar[str] = "train"

    max_steps: int = option(
        600, "steps per model: labelled batches (budget labelled) or every batch (total)", gt=0
    )
    eval_every: int = option(
        200, "steps (as max_steps counts them) between model-selection evaluations", gt=0
    )
    budget: str = option(
        "labelled",
        "what max_steps counts: labelled (labelled batches; MLM batches come on top, at the "
        "share temperature sampling gives them) or total (every batch: equal compute)",
        choices=("labelled", "total"),
    )
    batch_size: int = option(32, "examples per batch (one pair per batch)", gt=0)
    eval_batch_size: int = option(128, "examples per evaluation batch", gt=0)
    warmup_ratio: float = option(
        0.1, "fraction of steps with linear learning-rate warm-up", ge=0, le=1
    )
    max_grad_norm: float = option(1.0, "gradient clipping norm", gt=0)
    temperature: float = option(5.0, "pair sampling temperature T: p_i ~ n_i^(1/T)", gt=0)
    max_length: int = option(64, "maximum sequence length in sub-word tokens", gt=2)
    mlm_probability: float = option(0.15, "masking rate of the MLM task", gt=0, le=1)
    train_cap: int | None = option(None, "at most this many examples per labelled train pair", gt=0)
    mlm_cap: int = option(20000, "unlabelled sentences per MLM language", gt=0)
    eval_cap: int | None = option(
        None, "at most this many examples per evaluated pair (the first of its split)", gt=0
    )
    select_cap: int | None = option(
        None, "at most this many examples per model-selection pair (default: eval_cap)", gt=0
    )
    shots: int = option(10, "few-shot: labelled examples per target pair", gt=0)
    selection: str = option(
        "source-dev", "the weights a run evaluates: source-dev (the checkpoint with the best "
        "source-language dev score), last (the final weights) or average (the uniform average "
        "of the trainable weights at every evaluation point, Schmidt et al. 2023)",
        choices=SELECTION_RULES,
    )  # fmt: skip
    also_selection: str = option(
        "", "more rules, comma-separated (last,average), whose weights the same training is "
        "also tested with: each is logged as a run of its own, tagged same_training (bench run "
        "--selection source-dev,last,average)",
    )  # fmt: skip
    oracle: bool = option(
        False, "also evaluate every checkpoint on the target pairs' dev splits and log, apart "
        "under oracle/, the test scores of the checkpoints they pick: an upper bound that uses "
        "target data, never zero-shot (bench run --oracle)",
    )  # fmt: skip
    deduplicate: bool = option(
        True, "leave out of labelled training data and MLM text every example whose sentence "
        "the model evaluates (a test or oracle dev split); bench plan lists the overlaps",
    )  # fmt: skip
    head_steps: int = option(
        300, "steps of the MLM-head stage a backbone published without an MLM head (e5) gets "
        "before a method trains MLM on it (0: none; the method trains the random head)", ge=0,
    )  # fmt: skip
    head_lr: float = option(2e-3, "peak learning rate of the MLM-head stage", gt=0)
    precision: str = option(
        "fp32", "fp32, or bf16: bfloat16 autocast in training and evaluation (GPUs; CPUs with "
        "bfloat16 instructions: bench perf --precision)",
        choices=("fp32", "bf16"),
    )  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        rules = self.also_rules
        for rule in rules:
            if rule not in SELECTION_RULES or rule == self.selection or rules.count(rule) > 1:
                others = [r for r in SELECTION_RULES if r != self.selection]
                raise BenchError(
                    f"train.also_selection={self.also_selection!r} is invalid: {rule!r} is not "
                    f"a rule other than the run's own ({self.selection}) named once; valid: "
                    f"{', '.join(others)}"
                )

    @property
    def also_rules(self) -> tuple[str, ...]:
        """`also_selection`'s rules, in order."""
        return tuple(rule.strip() for rule in self.also_selection.split(",") if rule.strip())

    @property
    def selection_cap(self) -> int | None:
        """At most this many examples per model-selection pair: `select_cap`, else `eval_cap`."""
        return self.eval_cap if self.select_cap is None else self.select_cap
