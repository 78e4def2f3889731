"""`python -m bench perf`: Hyper-X's step time against a static adapter of the same size, and
every method's throughput, memory and harness overhead in real runs on the demo suite.

Both models are built in one process from the same randomly initialised backbone (mBERT's shape,
or the demo backbone's) and timed on the same batch, alternately, so that drift on a shared
machine hits both alike. A train step is forward, backward and the runner's optimizer step; an
eval step is a forward pass with no gradient, after `prepare_eval` (Hyper-X generates its weights
once per pair there). The static adapter is `adapters`' `seq_bn` with the same bottleneck, placed
in the same sub-layer, and trains the encoder's LayerNorms as Hyper-X does.

The method runs are `bench run` processes, one per method (each its own memory peak), one after
another on one fresh output folder: the first encodes the data, the others read it from the
cache, which gives preprocessing both ways. The harness's share of training is the time spent
drawing and collating batches and logging, over the training time (`time/batches_s`,
`time/logging_s`, `time/train_s`).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.errors import TrainingError
from bench.method import METHODS, Backbone, Model
from bench.params import LABELS, shaped_model, stand_in_plan, stand_in_tasks
from bench.runner import make_optimizer
from bench.settings import Pair

REPORT = Path(__file__).resolve().parent.parent / "reports" / "perf.md"
TASK = "pos"


@dataclasses.dataclass(frozen=True)
class Case:
    shape: str
    batch: int
    length: int
    bottleneck: int  # the reference's 256 on mBERT; the demo suite's 64 on the demo backbone


@dataclasses.dataclass
class Timing:
    case: Case
    train: dict[str, list[float]]  # method -> seconds per step
    eval: dict[str, list[float]]
    parts: dict[str, float]  # Hyper-X train step, median seconds: generation, optimizer, rest

    def ratio(self, kind: str) -> float:
        times = getattr(self, kind)
        return statistics.median(times["hyperx"]) / statistics.median(times["adapter"])


def _models(case: Case) -> dict[str, Model]:
    torch.manual_seed(0)
    encoder = shaped_model(case.shape)
    plan, _ = stand_in_plan(1, 1)
    tasks = stand_in_tasks([TASK])
    models = {}
    for name in ("hyperx", "adapter"):
        method = METHODS.get(name)
        config = method.Config().with_values({"bottleneck": case.bottleneck, "mlm": False})
        backbone = Backbone(case.shape, copy.deepcopy(encoder), tokenizer=None, init="random")
        models[name] = method.build(backbone, plan, tasks, config)
    # like for like: the static adapter also trains the encoder's LayerNorms, as Hyper-X does
    # (`adapters` would freeze them, and the embeddings' one alone spares a backward through
    # the first layer's attention), so that the ratio is the cost of generating the weights
    for module in models["adapter"].encoder.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.requires_grad_(True)
    return models


def _batch(case: Case, vocab: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    shape = (case.batch, case.length)
    return {
        "input_ids": torch.randint(5, vocab, shape, generator=generator),
        "attention_mask": torch.ones(shape, dtype=torch.long),
        "token_type_ids": torch.zeros(shape, dtype=torch.long),
        "labels": torch.randint(0, LABELS[TASK], shape, generator=generator),
    }


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(case: Case, *, repeats: int = 5) -> Timing:
    models = _models(case)
    vocab = next(iter(models.values())).encoder.config.vocab_size
    batch, pair = _batch(case, vocab), Pair(TASK, "l00")
    optimizers = {
        name: make_optimizer(m.trainable_parameters(), METHODS.get(name).Config().lr)
        for name, m in models.items()
    }
    train: dict[str, list[float]] = {name: [] for name in models}
    evals: dict[str, list[float]] = {name: [] for name in models}
    parts: dict[str, list[float]] = {"generation": [], "optimizer": []}

    def train_step(name: str) -> None:
        model, optimizer = models[name], optimizers[name]
        model.train()
        model(batch, pair).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def eval_step(name: str) -> None:
        with torch.no_grad():
            models[name](batch, pair)

    hyperx = models["hyperx"]
    for round_ in range(repeats + 1):  # round 0 warms up (allocations, optimizer state)
        for name in models:
            seconds = _seconds(lambda name=name: train_step(name))
            if round_:
                train[name].append(seconds)
        for name, model in models.items():
            model.eval()
            model.prepare_eval(pair)
            seconds = _seconds(lambda name=name: eval_step(name))
            if round_:
                evals[name].append(seconds)
        if round_:
            hyperx.train()
            parts["generation"].append(_seconds(lambda: hyperx.generate(pair)))
            hyperx(batch, pair).loss.backward()
            parts["optimizer"].append(_seconds(optimizers["hyperx"].step))
            optimizers["hyperx"].zero_grad(set_to_none=True)
    medians = {k: statistics.median(v) for k, v in parts.items()}
    medians["encoder, heads, backward"] = (
        statistics.median(train["hyperx"]) - medians["generation"] - medians["optimizer"]
    )
    return Timing(case, train, evals, medians)


CASES = (
    Case("mbert-base", 8, 128, 256),
    Case("mbert-base", 32, 256, 256),  # the paper's batch and length
    Case("demo", 32, 64, 64),  # the demo suite's batch, length and bottleneck
)
GOALS = {
    ("train", 8, 128): 1.10,
    ("train", 32, 256): 1.03,
    ("eval", 8, 128): 1.03,
    ("eval", 32, 256): 1.03,
}


def render(timings: list[Timing], *, command: str, threads: int, repeats: int) -> str:
    lines = [
        "# Hyper-X step time against a static adapter of the same size",
        "",
        f"Regenerate: `{command}` (CPU, {threads} threads, median of {repeats} steps after one",
        "warm-up; both models alternate on the same batch in one process).",
        "",
        "Static adapter: `adapters` `seq_bn` with Hyper-X's bottleneck, in the same sub-layer,",
        "training the encoder's LayerNorms as Hyper-X does. Backbones have random weights.",
        "Ratio = Hyper-X / static; goals from the Hyper-X issue.",
        "",
        "| backbone | bottleneck | batch | step | Hyper-X s | static s | ratio "
        "| spread (min-max, Hyper-X) | goal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in timings:
        c = t.case
        for kind in ("train", "eval"):
            times = getattr(t, kind)
            goal = GOALS.get((kind, c.batch, c.length)) if c.shape == "mbert-base" else None
            met = ""
            if goal is not None:
                met = f"<= {goal:.2f} ({'met' if t.ratio(kind) <= goal else 'NOT met'})"
            lines.append(
                f"| {c.shape} | {c.bottleneck} | {c.batch} x {c.length} | {kind} "
                f"| {statistics.median(times['hyperx']):.3f} "
                f"| {statistics.median(times['adapter']):.3f} | {t.ratio(kind):.3f} "
                f"| {min(times['hyperx']):.3f}-{max(times['hyperx']):.3f} | {met} |"
            )
    lines += ["", "Where a Hyper-X train step goes (median seconds):", ""]
    lines += ["| backbone | batch | generation | optimizer | encoder, heads, backward |"]
    lines += ["|---|---|---|---|---|"]
    for t in timings:
        p = t.parts
        lines.append(
            f"| {t.case.shape} | {t.case.batch} x {t.case.length} | {p['generation']:.4f} "
            f"| {p['optimizer']:.4f} | {p['encoder, heads, backward']:.3f} |"
        )
    return "\n".join(lines) + "\n"


# the methods of the README's comparison; `dummy` is a test method, `hyperx-small` Hyper-X's
# smaller configuration
RUN_METHODS = ("full-ft", "lora", "adapter", "madx", "hyperx-small", "hyperx")
HARNESS_GOAL = 0.05  # at most this share of a step outside the model (issue: perf and scale)


@dataclasses.dataclass
class MethodRun:
    method: str
    metrics: dict[str, float]

    @property
    def harness(self) -> float:
        m = self.metrics
        return (m["time/batches_s"] + m["time/logging_s"]) / m["time/train_s"]


def run_methods(methods: list[str], *, steps: int, threads: int) -> list[MethodRun]:
    """Each method trained for `steps` on the demo suite in its own `bench run` process."""
    from mlflow.tracking import MlflowClient

    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-perf-") as folder:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        for method in methods:
            print(f"running {method} on the demo suite, {steps} steps ...", flush=True)
            command = [sys.executable, "-m", "bench", "run", "--method", method, "--output",
                       folder, "--max-steps", str(steps), "--eval-every", str(steps),
                       "--no-progress"]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise TrainingError(f"perf: the {method} run failed: {last}")
            client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
            experiment = client.get_experiment_by_name("demo").experiment_id
            (run,) = client.search_runs(
                [experiment], f"tags.method = '{method}'", order_by=["start_time DESC"],
                max_results=1,
            )  # fmt: skip
            runs.append(MethodRun(method, run.data.metrics))
    return runs


def render_methods(runs: list[MethodRun], *, steps: int, threads: int) -> str:
    lines = [
        "## Every method on the demo suite",
        "",
        f"`bench run --max-steps {steps} --eval-every {steps}` per method, each in a fresh "
        f"process ({threads} threads), in this order on one fresh output folder. *harness* is "
        "the share of training spent drawing and collating batches and logging (goal: at most "
        f"{HARNESS_GOAL:.0%}); *data* is reading and encoding the splits, or reading them from "
        "the cache (splits encoded now + read from the cache).",
        "",
        "| method | trained params | train tokens/s | eval tokens/s | peak RSS MB | harness "
        "| data s (encoded + cached) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        m = r.metrics
        met = "met" if r.harness <= HARNESS_GOAL else "NOT met"
        lines.append(
            f"| `{r.method}` | {int(m['params/trainable']):,} "
            f"| {m['throughput/tokens_per_s']:,.0f} | {m['throughput/eval_tokens_per_s']:,.0f} "
            f"| {m['memory/peak_rss_mb']:,.0f} | {r.harness:.1%} ({met}) "
            f"| {m['time/data_s']:.1f} ({int(m['data/encoded'])} + {int(m['data/cached'])}) |"
        )
    cold = runs[0].metrics
    warm = [r.metrics["time/data_s"] for r in runs[1:] if not r.metrics["data/encoded"]]
    if warm:
        lines += [
            "",
            f"Preprocessing: the first run encoded {int(cold['data/encoded'])} splits in "
            f"{cold['time/data_s']:.1f} s; runs that found every split in the cache read them in "
            f"{statistics.median(warm):.1f} s (median of {len(warm)}).",
        ]
    return "\n".join(lines) + "\n"
