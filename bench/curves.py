"""`python -m bench compare --budgets 200,400,800,1600`: learning curves.

The grid of methods and seeds runs once per labelled budget (`train.max_steps`, counted as
`train.budget` says: under `labelled`, the labelled batches), tuned values and all else equal.
The report plots each task's average target score against the labelled steps and against the
training FLOPs (stages included), the mean over seeds with their range as a band, beside the
majority and word-lookup references; its table gives the same figures, and its reading the
smallest budget at which each method's mean passes the references and each other method.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from bench.compare import Cell
from bench.report import mean_sd, seeds_text

LABELLED = "budget/labelled_steps"
FLOPS = "budget/train_flops"


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def _tasks(curves: dict[int, list[Cell]]) -> list[str]:
    keys = {k for cells in curves.values() for c in cells for m in c.runs for k in m}
    scores = [k for k in keys if k.startswith("eval/") and k.endswith("/avg_target")]
    return sorted(k.split("/")[1] for k in scores)


def _reference(curves: dict[int, list[Cell]], name: str, task: str) -> float | None:
    """A reference's average over the target pairs: fitted on the source training data, it is
    the same for every run that trains on the same data (taken from the first that logs it)."""
    key = f"reference/{name}/{task}/avg_target"
    return next(
        (m[key] for cells in curves.values() for c in cells for m in c.runs if key in m), None
    )


def _short(curves: dict[int, list[Cell]]) -> dict[str, str]:
    """Each method's label without its bracket of given values (`hyperx [lr=0.000141, ...]`:
    `hyperx`) where the short names stay apart; the full label where they would not."""
    labels = list(dict.fromkeys(c.method for cells in curves.values() for c in cells))
    short = {label: label.split(" [")[0] for label in labels}
    if len(set(short.values())) < len(labels):
        return {label: label for label in labels}
    return short


def _series(
    curves: dict[int, list[Cell]], setting: str, method: str, key: str
) -> list[list[float]]:
    """Per budget (ascending): every seed's value of `key`, for one method and setting."""
    return [
        next((c.values(key) for c in curves[b] if (c.method, c.setting) == (method, setting)), [])
        for b in sorted(curves)
    ]


def plot(curves: dict[int, list[Cell]], stem: Path) -> list[tuple[str, Path]]:
    """One figure per setting: a column per task, the score against labelled steps (top) and
    against training FLOPs (bottom), both on log axes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    tasks = _tasks(curves)
    cells = [c for cells in curves.values() for c in cells]
    methods = list(dict.fromkeys(c.method for c in cells))
    names = _short(curves)
    seeds = seeds_text([len(c.runs) for c in cells])
    paths = []
    for setting in dict.fromkeys(c.setting for c in cells):
        figure, axes = pyplot.subplots(2, len(tasks), figsize=(5.0 * len(tasks), 8.0),
                                       squeeze=False)  # fmt: skip
        for column, task in enumerate(tasks):
            score = f"eval/{task}/avg_target"
            for method in methods:
                values = _series(curves, setting, method, score)
                means = [_mean(v) for v in values]
                low = [min(v) if v else float("nan") for v in values]
                high = [max(v) if v else float("nan") for v in values]
                for row, key in enumerate((LABELLED, FLOPS)):
                    x = [_mean(v) for v in _series(curves, setting, method, key)]
                    ax = axes[row][column]
                    (line,) = ax.plot(x, means, marker="o", markersize=4, label=names[method])
                    ax.fill_between(x, low, high, color=line.get_color(), alpha=0.15)
            for row, label in enumerate(("labelled steps", "training FLOPs (stages included)")):
                ax = axes[row][column]
                for name, style in (("majority", ":"), ("lookup", "--")):
                    if (value := _reference(curves, name, task)) is not None:
                        ax.axhline(value, color="grey", linestyle=style, linewidth=1, label=name)
                ax.set_xscale("log")
                if row == 0:  # the budgets themselves, not powers of ten
                    ax.set_xticks(sorted(curves))
                    ax.xaxis.set_major_formatter(ScalarFormatter())
                    ax.xaxis.set_minor_formatter(NullFormatter())
                ax.set_xlabel(label, fontsize=9)
                ax.set_title(f"{setting}, {task}: average target score", fontsize=10)
        handles, labels = axes[0][0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8)
        figure.suptitle(f"mean over {seeds}; the band spans the seeds", fontsize=10)
        rows = -(-len(labels) // 4)  # the legend's, below the plots
        figure.tight_layout(rect=(0, 0.035 * rows, 1, 1))
        path = stem.with_name(f"{stem.name}-{setting}.png")
        figure.savefig(path, dpi=110)
        pyplot.close(figure)
        paths.append((f"{setting}: score against labelled steps and FLOPs", path))
    return paths


def render(
    curves: dict[int, list[Cell]], *, suite: str, command: str, plots: list[tuple[str, Path]]
) -> str:
    tasks = _tasks(curves)
    budgets = sorted(curves)
    lines = [
        f"# Learning curves: {suite}",
        "",
        f"Written by `{command}`: each method and seed at {len(budgets)} labelled budgets "
        f"({', '.join(map(str, budgets))} steps), everything else equal. Scores are the average "
        "over target pairs; mean ± sd over seeds.",
        "",
        *(f"![{title}]({path.name})" for title, path in plots),
        "",
    ]
    names = _short(curves)
    if given := [f"`{n}` is `{label}`" for label, n in names.items() if n != label]:
        lines += ["Methods: " + "; ".join(given) + ".", ""]
    header = ["method", "setting", "steps", "labelled", "MLM", "train FLOPs"]
    header += [f"{task} target" for task in tasks]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    ordered = sorted(
        ((b, c) for b in budgets for c in curves[b]), key=lambda bc: (bc[1].setting, bc[1].method)
    )  # by setting and method, each's budgets ascending
    for steps, c in ordered:
        row = [f"`{names[c.method]}`", c.setting, str(steps)]
        row += [f"{_mean(c.values(k)):,.0f}" for k in (LABELLED, "budget/mlm_steps")]
        row += [f"{_mean(c.values(FLOPS)):.2e}"]
        row += [mean_sd(c.values(f"eval/{task}/avg_target")) for task in tasks]
        lines.append("| " + " | ".join(row) + " |")
    references = [
        f"{task}: majority {m:.1f}" + (f", lookup {k:.1f}" if k is not None else "")
        for task in tasks
        if (m := _reference(curves, "majority", task)) is not None
        for k in [_reference(curves, "lookup", task)]
    ]
    lines += ["", "References (average over target pairs): " + "; ".join(references) + ".", ""]
    lines += ["## Reading", "", *_crossings(curves, tasks), ""]
    return "\n".join(lines)


def _crossings(curves: dict[int, list[Cell]], tasks: list[str]) -> list[str]:
    """Per setting, task and method: the smallest budget at which its mean passes the
    strongest reference, and, against each other method, whether it leads at every budget,
    from which budget on it stays ahead (it overtakes), or that it is behind at the largest."""
    budgets = sorted(curves)
    cells = [c for cells in curves.values() for c in cells]
    names = _short(curves)
    lines = []
    for setting in dict.fromkeys(c.setting for c in cells):
        methods = list(dict.fromkeys(c.method for c in cells if c.setting == setting))
        for task in tasks:
            key = f"eval/{task}/avg_target"
            refs = {n: _reference(curves, n, task) for n in ("majority", "lookup")}
            bar_name, bar = max(
                ((n, v) for n, v in refs.items() if v is not None), key=lambda item: item[1]
            )
            scores = {names[m]: _series(curves, setting, m, key) for m in methods}
            for method in scores:
                means = [_mean(v) for v in scores[method]]
                passed = next((i for i, s in enumerate(means) if s > bar), None)
                when = f"at no budget up to {budgets[-1]}"
                if passed is not None:
                    when = f"from {budgets[passed]} steps"
                    seeds = scores[method][passed]
                    if len(seeds) > 1 and means[passed] - bar <= statistics.stdev(seeds):
                        when += " (by less than the seeds' sd there)"
                lines.append(
                    f"- {setting}, {task}: `{method}` beats {bar_name} ({bar:.1f}) {when}; "
                    + "; ".join(_against(method, scores, budgets))
                )
    return lines


def _against(method: str, scores: dict[str, list[list[float]]], budgets: list[int]) -> list[str]:
    """`method` against each other method, by the means over seeds at the budgets both ran; a
    gap at the last of them within the larger of the two methods' sd over seeds is marked."""
    ahead, passes, behind = [], [], {}
    for other in scores:
        if other == method:
            continue
        shared = [
            (steps, _mean(mine), _mean(theirs), mine, theirs)
            for steps, mine, theirs in zip(budgets, scores[method], scores[other], strict=True)
            if mine and theirs
        ]
        if not shared:
            continue
        leads = [me > them for _, me, them, _, _ in shared]
        at, me, them, mine, theirs = shared[-1]
        spread = max((statistics.stdev(v) for v in (mine, theirs) if len(v) > 1), default=None)
        name = f"`{other}`"
        if spread is not None and abs(me - them) <= spread:
            name += f" (by less than the seeds' sd at {at} steps)"
        if all(leads):
            ahead.append(name)
        elif leads[-1]:
            first = len(leads) - leads[::-1].index(False)  # the first of the final run of leads
            passes.append(f"{name} from {shared[first][0]} steps")
        else:
            behind.setdefault(at, []).append(name)
    return [
        *([f"ahead of {', '.join(ahead)} at every budget"] if ahead else []),
        *([f"overtakes {', '.join(passes)}"] if passes else []),
        *(f"behind {', '.join(names)} at {at} steps" for at, names in sorted(behind.items())),
    ] or ["no other method to compare"]
