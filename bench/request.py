"""What the user asked for, checked before any heavy library loads: a run's `Request` and its
resolution into a suite, method, configs and Plan, and the method entries of a grid. A bad name,
value or file is answered in a fraction of a second, not after torch has loaded."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import leakage, suites, typology
from bench import plugins as load_plugins
from bench.config import TrainConfig
from bench.errors import BenchError
from bench.method import METHODS, Method, MethodConfig, variant
from bench.settings import SETTINGS, Plan, check_read, oracle_pairs
from bench.suites import Suite


@dataclasses.dataclass(frozen=True)
class Request:
    """What the user asked for, before validation."""

    method: str
    setting: str = "mixed"
    suite: str = "demo"
    seed: int = 0
    output: Path = Path("bench-runs")
    tracking_uri: str | None = None
    backbone_init: str = "pretrained"  # or "random": same shape, untrained (a control)
    tasks: tuple[str, ...] = ()  # restrict the suite to these labelled tasks; () = all
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    method_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    progress: bool = True
    plugins: tuple[Path, ...] = ()  # modules outside the repository that register methods
    tags: dict[str, str] = dataclasses.field(default_factory=dict)  # more MLflow run tags
    # called after each model-selection evaluation with its mean score and whether it was the
    # run's last; it may raise `Stopped` to end the run there (a sweep pruning a trial)
    on_select: Callable[[float, bool], None] | None = None
    resume: str | None = None  # the id of an interrupted run to continue from its checkpoint
    trust_remote_code: bool = False  # run a backbone's own modelling code (`auto_map`)


def resolve(request: Request) -> tuple[Suite, type[Method], MethodConfig, TrainConfig, Plan]:
    """The suite, method, validated configs and Plan a request names; no data is loaded, and
    no heavy library: a bad name or value is answered at once."""
    load_plugins.load_builtins()
    load_plugins.load_files(request.plugins)
    if request.backbone_init not in ("pretrained", "random"):
        raise BenchError(
            f"backbone init {request.backbone_init!r} is invalid; valid: pretrained, random"
        )
    suite = suites.get(request.suite)
    if request.tasks:
        suite = suite.restricted(request.tasks)
    setting = SETTINGS.get(request.setting)
    check_read(request.train, [setting.name])
    method = METHODS.get(request.method)
    defaults = suite.method_options.get(method.name, {})
    method_config = method.Config().with_values({**defaults, **request.method_options})
    train = suite.train.with_values(request.train)
    plan = setting.build(suite, request.seed, train)
    leakage.check(plan, suite, train)  # before anything is trained on it
    for model_plan in plan.models:
        method.check(model_plan, method_config)
        typology.check(suite, method.typology_languages(model_plan, method_config))
    return suite, method, method_config, train, plan


def check_sources(suite: Suite, plan: Plan, stages: dict, mlm: bool) -> None:
    """Every split the run reads can be had, before anything is written: offline, data missing
    from the caches stops the run at once, not after the data before it is tokenised."""
    for model in plan.models:
        staged = [t for stage in stages[model.name] for t in stage.pairs]
        items = [*model.train, *(model.mlm if mlm else ()), *staged, *model.selection, *model.eval]
        for item in dict.fromkeys((i.pair, i.split) for i in items):
            source = suite.task(item[0].task).source
            if check := getattr(source, "check", None):  # sources that may need the network
                check(item[0].language, item[1])


UNITS = {"token": "sentences", "sentence": "pairs", "mlm": "lines"}


def examples(suite: Suite, plan: Plan, train: TrainConfig) -> list[tuple[str, str, str, int]]:
    """(model, role, `task/language@split[slice]`, examples) for every pair a run of `plan`
    reads: the split after its slice, the examples trained on left out, and the cap, as the
    runner subsets it (`bench.data.load_pair`). Reads the data."""
    rows = []
    for model in plan.models:
        groups = [("train", model.train), ("mlm", model.mlm)]
        groups += [("selection", model.selection), ("eval", model.eval)]
        if train.oracle:  # the target dev splits the oracle scores, capped as selection is
            groups.append(("oracle", oracle_pairs(model, suite)))
        for role, items in groups:
            for item in items:
                total = len(suite.task(item.pair.task).load(item.pair.language, item.split))
                if role in ("train", "mlm"):
                    kept = list(range(total) if item.indices is None else item.indices)
                    cap = item.cap
                else:
                    dropped = set(item.exclude)
                    kept = [i for i in range(total) if i not in dropped]
                    cap = train.eval_cap if role == "eval" else train.selection_cap
                kept = kept[:cap]
                label = f"{item.pair}@{item.split}{_slice(kept, total)}"
                if role in ("eval", "oracle"):
                    label += f" ({item.role})"
                rows.append((model.name, role, label, len(kept)))
    return rows


def _slice(kept: list[int], total: int) -> str:
    """How `kept` cuts a split of `total` examples: `[1800:]`, `[:400]`, or `{5 chosen}`."""
    if kept == list(range(total)):
        return ""
    if kept and kept == list(range(kept[0], kept[-1] + 1)):
        start, stop = kept[0] or "", "" if kept[-1] + 1 == total else kept[-1] + 1
        return f"[{start}:{stop}]"
    return f"{{{len(kept)} chosen}}"


def render_examples(suite: Suite, rows: list[tuple[str, str, str, int]]) -> str:
    lines = ["examples each pair reads (after its slice, the shots trained on, and the caps):"]
    width = max(len(label) for _, _, label, _ in rows)
    for model in dict.fromkeys(m for m, _, _, _ in rows):
        lines.append(f"model {model!r}")
        for _, role, label, count in (r for r in rows if r[0] == model):
            unit = UNITS[suite.task(label.partition("/")[0]).kind]
            lines.append(f"  {role:<10} {label.ljust(width)} {count:>8,} {unit}")
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One method of a grid: `METHOD` or `METHOD:KEY=VALUE[:KEY=VALUE]` (its own options, such
    as `adapter:mlm=true`, and `train.KEY=VALUE` values for its runs alone, such as the warmup
    its study chose), and the name reports give it (`bench.method.variant`)."""

    method: str
    options: dict[str, str]
    label: str
    train: dict[str, str] = dataclasses.field(default_factory=dict)


def parse_methods(text: str, plugins: tuple[Path, ...] = ()) -> list[Entry]:
    """`--methods`: comma-separated entries, each checked against the method's options."""
    load_plugins.load_builtins()
    load_plugins.load_files(plugins)
    entries = []
    for item in (m.strip() for m in text.split(",") if m.strip()):
        name, *sets = item.split(":")
        options, train = {}, {}
        for option in sets:
            key, sep, value = option.partition("=")
            if not sep or not key or key == "train.":
                raise BenchError(
                    f"--methods entry {item!r} is invalid: expected METHOD or "
                    "METHOD:KEY=VALUE[:KEY=VALUE], e.g. adapter:mlm=true or "
                    "madx:train.warmup_ratio=0.1"
                )
            if key.startswith("train."):
                train[key.removeprefix("train.")] = value
            else:
                options[key.removeprefix("method.")] = value
        method = METHODS.get(name)
        config = method.Config().with_values(options)
        TrainConfig().with_values(train)  # checked here: one line naming the bad key or value
        label = variant(method, config)
        shown = {**options, **{f"train.{k}": v for k, v in train.items()}}
        if others := sorted(set(shown) - {"mlm", *method.variant_options}):
            label += " [" + ", ".join(f"{k}={shown[k]}" for k in others) + "]"
        entries.append(Entry(name, options, label, train))
    labels = [e.label for e in entries]
    if not entries or len(set(labels)) < len(labels):
        twice = sorted({x for x in labels if labels.count(x) > 1}) or ["(none given)"]
        raise BenchError(f"--methods {text!r} is invalid: {', '.join(twice)} more than once")
    return entries
