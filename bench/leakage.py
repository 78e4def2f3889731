"""The leakage guard: a Plan is checked before anything is trained or printed.

`check` refuses a Plan (a `BenchError` naming the setting, the model and the offending pair)
unless, for every model of it:

0. every split it names exists: a missing split is an error, never a substitution;
1. nothing is trained on a test split, MLM text included;
2. no labelled data of a pair it evaluates as a target is trained on; in the few-shot setting a
   target pair is trained on only through its shots (training pairs with `indices`), at most
   `train.shots` of them in all;
3. the model is selected on source dev data only: every selection pair reads a dev split of a
   pair the model trains on with labels, and is no target pair. A pair that only had shots is no
   source: in the few-shot setting, a training pair with `indices` whose pair the model does not
   evaluate as a source is a shot. Another split (a held-out slice of train) never selects;
4. no example is both trained on and evaluated or selected on: an evaluation or selection pair on
   the same split of the same pair as a training pair excludes every trained example (few-shot:
   the shots, when evaluation reads their split; `pos/eng@dev[:1800]` trained and
   `pos/eng@dev[1800:]` selecting is fine).

Examples are told apart here by (pair, split, index); two splits, or two pairs, that hold the
same sentences (a test file given as a dev file, test sentences as MLM text) are the content
check's to find (`bench.overlap`), once the data is read.
"""

from __future__ import annotations

from bench.config import TrainConfig
from bench.errors import BenchError
from bench.settings import EvalPair, ModelPlan, Pair, Plan, TrainPair
from bench.suites import Suite

FEW_SHOT = "few-shot"  # the one setting in which a target pair may be trained on (its shots)


def check(plan: Plan, suite: Suite, train: TrainConfig) -> None:
    """Raises a one-line `BenchError` on the first rule a model of `plan` breaks."""
    for model in plan.models:
        where = f"setting {plan.setting}, model {model.name}"
        _splits_exist(model, suite, where)
        for t in (*model.train, *model.mlm):
            if t.split == "test":
                raise BenchError(f"leakage: {where} trains on {_name(t)}, a test split")
        few_shot = plan.setting == FEW_SHOT
        targets = {e.pair for e in model.eval if e.role == "target"}
        _targets_untrained(model, targets, few_shot, suite, train, where)
        _selected_on_source_dev(model, targets, few_shot, where)
        _nothing_trained_is_read(model, suite, where)


def _splits_exist(model: ModelPlan, suite: Suite, where: str) -> None:
    for item in (*model.train, *model.mlm, *model.selection, *model.eval):
        available = suite.task(item.pair.task).source.splits(item.pair.language)
        if item.split not in available:
            have = ", ".join(available) or "none"
            raise BenchError(
                f"{where}: {item.pair} has no {item.split!r} split (it has: {have}); "
                "a missing split is never substituted"
            )


def _targets_untrained(
    model: ModelPlan,
    targets: set[Pair],
    few_shot: bool,
    suite: Suite,
    train: TrainConfig,
    where: str,
) -> None:
    shots: dict[Pair, int] = {}
    for t in model.train:
        if t.pair not in targets:
            continue
        if not few_shot:
            raise BenchError(f"leakage: {where} trains on {_name(t)}, a target pair it evaluates")
        if t.indices is None:
            raise BenchError(
                f"leakage: {where} trains on all of {_name(t)}, a target pair it evaluates; "
                "few-shot trains a target pair on its shots only"
            )
        shots[t.pair] = shots.get(t.pair, 0) + len(trained(t, suite))
        if shots[t.pair] > train.shots:
            raise BenchError(
                f"leakage: {where} trains on {shots[t.pair]} examples of {t.pair}, a target pair "
                f"it evaluates; few-shot allows train.shots={train.shots}"
            )


def _selected_on_source_dev(
    model: ModelPlan, targets: set[Pair], few_shot: bool, where: str
) -> None:
    evaluated_sources = {e.pair for e in model.eval if e.role == "source"}
    sources = {
        t.pair
        for t in model.train
        if not (few_shot and t.indices is not None and t.pair not in evaluated_sources)
    } - targets
    shot_only = {t.pair for t in model.train} - sources - targets
    for e in model.selection:
        if e.split != "dev":
            raise BenchError(
                f"leakage: {where} selects on {_name(e)}, not a dev split; "
                "model selection uses source dev data only"
            )
        if e.pair in targets or e.role == "target":
            raise BenchError(f"leakage: {where} selects on {_name(e)}, a target pair it evaluates")
        if e.pair in shot_only:
            raise BenchError(
                f"leakage: {where} selects on {_name(e)}, a pair it trains on only through shots"
            )
        if e.pair not in sources:
            raise BenchError(
                f"leakage: {where} selects on {_name(e)}, a pair it does not train on with labels"
            )


def _nothing_trained_is_read(model: ModelPlan, suite: Suite, where: str) -> None:
    for verb, group in (("selects on", model.selection), ("evaluates", model.eval)):
        for e in group:
            same = [t for t in model.train if (t.pair, t.split) == (e.pair, e.split)]
            overlap = {i for t in same for i in trained(t, suite)} - set(e.exclude)
            if overlap:
                examples = "example" if len(overlap) == 1 else "examples"
                raise BenchError(
                    f"leakage: {where} {verb} {_name(e)}, which holds {len(overlap)} {examples} "
                    f"it trains on (the first: index {min(overlap)}); exclude them"
                )


def trained(t: TrainPair, suite: Suite) -> list[int] | range:
    """The examples of its split a training pair reads: its indices (or the whole split) but
    those it excludes, then the first `cap` of them, as `bench.data.load_pair` reads them."""
    if t.indices is None and not t.exclude:
        size = len(suite.task(t.pair.task).load(t.pair.language, t.split))
        return range(size if t.cap is None else min(t.cap, size))
    kept = t.indices
    if kept is None:
        kept = range(len(suite.task(t.pair.task).load(t.pair.language, t.split)))
    drop = set(t.exclude)
    return [i for i in kept if i not in drop][: t.cap]


def _name(item: TrainPair | EvalPair) -> str:
    return f"{item.pair}@{item.split}"
