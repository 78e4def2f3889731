"""Leakage by content: the sentences every split of a Plan reads, fingerprinted.

The leakage guard (`bench.leakage`) tells examples apart by pair, split and index, so it cannot
see a test file given as a language's dev file, or test sentences given as its MLM text. Here
each sentence a model reads is reduced to a digest of its text (Unicode NFKC, case folded, all
whitespace removed: a token list and the raw line it came from agree), and `check` refuses a
Plan in which more than `LIMIT` of the sentences a model evaluates (a test or oracle split) are
also trained on (labels or MLM text) or selected on (a test split's), or more than `LIMIT` of
the sentences it selects on are trained on with labels. Real data shares some sentences between
its splits ("Yes.", a date, a heading, a news story in two splits); `bench plan` prints every
overlap, over the limit or not, and `deduplicate` (`train.deduplicate`, on by default) leaves
the shared examples out of training, so that no model is tested on a sentence it trained on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import unicodedata
from collections.abc import Iterable

from bench.errors import BenchError
from bench.settings import EvalPair, ModelPlan, Plan, TrainPair, oracle_pairs
from bench.suites import Suite
from bench.task import Kind

# the share of an evaluated split's distinct sentences that may also be read elsewhere. A file
# given for another shares all of them; official splits share a few: up to 12.2% in the shared
# suite (MasakhaNER 2.0 Hausa test with its train split), which `train.deduplicate` removes
LIMIT = 0.25
SHOWN = 0.01  # `bench plan` lists overlaps from this share on, and counts the smaller ones
TEXT_COLUMNS = {
    Kind.TOKEN: ("tokens",),
    Kind.SENTENCE: ("premise", "hypothesis"),
    Kind.MLM: ("text",),
}


@dataclasses.dataclass(frozen=True)
class Overlap:
    """The distinct sentences that `evaluated` (read as `role`) shares with `other`."""

    model: str
    role: str  # "evaluates", "oracle" or "selects on"
    evaluated: str  # where the evaluated sentences come from: a file, or task/language@split
    other_role: str  # "trains on", "MLM text" or "selects on"
    other: str
    shared: int
    total: int  # distinct sentences of the evaluated split

    @property
    def share(self) -> float:
        return self.shared / max(self.total, 1)

    @property
    def refused(self) -> bool:
        return self.share > LIMIT

    def line(self) -> str:
        return (
            f"model {self.model} {self.role} {self.evaluated}, which shares {self.shared} of "
            f"its {self.total} sentences ({self.share:.1%}) with {self.other} ({self.other_role})"
        )


def normalise(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).casefold().split())


def digest(text: str) -> bytes:
    return hashlib.blake2b(normalise(text).encode(), digest_size=12).digest()


class _Digests:
    """Per example of a split, the digests of its sentences (NLI: premise and hypothesis),
    computed when first asked for: a run reads a prefix of a language's MLM text."""

    def __init__(self, suite: Suite, task: str, language: str, split: str) -> None:
        data = suite.task(task).load(language, split)
        columns = TEXT_COLUMNS[suite.task(task).kind]
        # whole columns at once: a Dataset read row by row formats each row (ten times slower)
        table = data.select_columns(list(columns)).to_dict()
        self._rows = list(zip(*(table[c] for c in columns), strict=True))
        self._done: dict[int, frozenset] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: int) -> frozenset:
        if i not in self._done:
            self._done[i] = frozenset(
                digest(" ".join(v) if isinstance(v, list) else v) for v in self._rows[i] if v
            )
        return self._done[i]


_CACHE: dict[tuple, _Digests] = {}  # (task, language, split, fingerprint) -> digests


def _digests(suite: Suite, task: str, language: str, split: str) -> _Digests:
    key = (task, language, split, suite.task(task).source.fingerprint(language, split))
    if key not in _CACHE:
        _CACHE[key] = _Digests(suite, task, language, split)
    return _CACHE[key]


def source_name(suite: Suite, item: TrainPair | EvalPair) -> str:
    """A split as an error names it: its file where the source has files."""
    source = suite.task(item.pair.task).source
    source = getattr(source, "sources", {}).get(item.pair.language, source)
    if path := getattr(source, "path", None):
        try:
            return str(path(item.pair.language, item.split))
        except KeyError:
            pass
    return f"{item.pair}@{item.split}"


def _read(suite: Suite, item: TrainPair | EvalPair, indices: Iterable[int] | None = None) -> set:
    rows = _digests(suite, item.pair.task, item.pair.language, item.split)
    if indices is None:
        skip = set(item.exclude) if isinstance(item, EvalPair) else set()
        indices = (i for i in range(len(rows)) if i not in skip)
    return {d for i in indices for d in rows[i]}


def _trained(suite: Suite, t: TrainPair) -> set:
    from bench.leakage import trained

    return _read(suite, t, trained(t, suite))


def overlaps(
    plan: Plan, suite: Suite, oracle: tuple[EvalPair, ...] | dict = (), mlm: bool = True
) -> list[Overlap]:
    """Every overlap of a model's evaluated sentences (its test pairs, its `oracle` pairs: a
    dict from model name to them) with what it trains or selects on, and of its selection
    sentences with what it trains on with labels; `mlm` False leaves out MLM text (a method
    that reads none)."""
    found = []
    for model in plan.models:
        extra = oracle.get(model.name, ()) if isinstance(oracle, dict) else oracle
        found += _model_overlaps(model, suite, tuple(extra), mlm)
    return found


def _model_overlaps(
    model: ModelPlan, suite: Suite, oracle: tuple[EvalPair, ...], mlm: bool
) -> list[Overlap]:
    trained = [(t, "trains on", _trained(suite, t)) for t in model.train]
    texts = [(t, "MLM text", _trained(suite, t)) for t in (model.mlm if mlm else ())]
    selected = [(e, "selects on", _read(suite, e)) for e in model.selection]
    checks = [("evaluates", e, [*trained, *texts, *selected]) for e in model.eval]
    # the oracle's dev sentences may be a source's selection sentences under another task's
    # labels (one corpus annotated for NER and POS): only their training counts
    checks += [("oracle", e, [*trained, *texts]) for e in oracle]
    checks += [("selects on", e, trained) for e in model.selection]
    found = []
    for role, e, others in checks:
        sentences = _read(suite, e)
        for other, other_role, read in others:
            if shared := len(sentences & read):
                found.append(
                    Overlap(
                        model.name,
                        role,
                        source_name(suite, e),
                        other_role,
                        source_name(suite, other),
                        shared,
                        len(sentences),
                    )
                )
    return found


def check(plan: Plan, suite: Suite, oracle=(), mlm: bool = True) -> list[Overlap]:
    """Raises a one-line `BenchError` on the largest overlap over `LIMIT`; returns them all."""
    found = overlaps(plan, suite, oracle, mlm)
    refused = sorted((o for o in found if o.refused), key=lambda o: -o.share)
    if refused:
        raise BenchError(
            f"leakage by content: {refused[0].line()}; at most {LIMIT:.0%} may be shared "
            "(a test file given as a dev file, or test sentences as MLM text?)"
        )
    return found


def deduplicate(plan: Plan, suite: Suite) -> Plan:
    """The Plan with every training pair's (labelled or MLM) examples whose sentences one of
    the model's test pairs holds left out (`TrainPair.exclude`)."""
    models = []
    for model in plan.models:
        tested = set().union(*(_read(suite, e) for e in model.eval))
        train = tuple(_without(suite, t, tested) for t in model.train)
        mlm = tuple(_without(suite, t, tested) for t in model.mlm)
        models.append(dataclasses.replace(model, train=train, mlm=mlm))
    return dataclasses.replace(plan, models=tuple(models))


def _without(suite: Suite, t: TrainPair, sentences: set) -> TrainPair:
    """Reads the pair's examples in order until its `cap` of them are kept: those past it are
    never trained on (`bench.leakage.trained`), so they need no screening."""
    rows = _digests(suite, t.pair.task, t.pair.language, t.split)
    skip, drop, kept = set(t.exclude), set(), 0
    for i in range(len(rows)) if t.indices is None else t.indices:
        if t.cap is not None and kept == t.cap:
            break
        if i in skip:
            continue
        if rows[i] & sentences:
            drop.add(i)
        else:
            kept += 1
    return dataclasses.replace(t, exclude=tuple(sorted({*t.exclude, *drop})))


def render(plan: Plan, suite: Suite, train) -> str:
    """What `bench plan` prints: every overlap by content (with the target dev splits the
    oracle would score), what `train.deduplicate` leaves out of training, and a refusal over
    `LIMIT` (then the exit code is 2)."""
    oracle = {m.name: oracle_pairs(m, suite) for m in plan.models}
    found = overlaps(plan, suite, oracle)

    def refused(o: Overlap) -> bool:  # the oracle's splits count only where a run scores them
        return o.refused and (o.role != "oracle" or train.oracle)

    lines = [f"sentences shared between splits (at most {LIMIT:.0%} of an evaluated split):"]
    shown = [o for o in found if o.share >= SHOWN or refused(o)]
    lines += [f"  {'REFUSED ' * refused(o)}{o.line()}" for o in shown]
    if small := [o for o in found if o not in shown]:
        count = sum(o.shared for o in small)
        lines.append(f"  and {len(small)} smaller overlaps (under {SHOWN:.0%} each, {count} "
                     "sentences in all)")  # fmt: skip
    lines += [] if found else ["  none"]
    if train.deduplicate and not any(map(refused, found)):
        left = [
            (m.name, t)
            for m in deduplicate(plan, suite).models
            for t in (*m.train, *m.mlm)
            if t.exclude
        ]
        lines.append("left out of training (train.deduplicate): their sentences are tested")
        lines += [f"  model {name}: {len(t.exclude)} of {t.pair}@{t.split}" for name, t in left]
        lines += [] if left else ["  none"]
    text = "\n".join(lines)
    if any(map(refused, found)):
        print(text, flush=True)
        check(plan, suite, oracle if train.oracle else ())
    return text
