"""`python -m bench perf`: Hyper-X's step time against a static adapter of the same size; every
method's steps on an mBERT-shaped backbone; every method's throughput, memory and harness
overhead in real runs on the demo suite; and a data-parallel run against a one-process one.
Everything runs on the GPU when there is one.

Both models are built in one process from the same randomly initialised backbone (mBERT's shape,
or the demo backbone's) and timed on the same batch, alternately, so that drift on a shared
machine hits both alike. A train step is forward, backward and the runner's optimizer step; an
eval step is a forward pass with no gradient, after `prepare_eval` (Hyper-X generates its weights
once per pair there). The static adapter is `adapters`' `seq_bn` with the same bottleneck, placed
in the same sub-layer, and trains the encoder's LayerNorms as Hyper-X does.

The per-method steps on the mBERT shape run each method in its own process (its own memory
peak), with the method's defaults (the paper's bottleneck), on one task and no MLM.

The method runs are `bench run` processes, one per method (each its own memory peak), one after
another on one fresh output folder: the first encodes the data, the others read it from the
cache, which gives preprocessing both ways. The harness's share of training is the time spent
drawing and collating batches and logging, over the training time (`time/batches_s`,
`time/logging_s`, `time/train_s`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
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
from bench.method import METHODS, Backbone
from bench.model import Model
from bench.params import LABELS, shaped_model, stand_in_plan, stand_in_tasks
from bench.report import REPORTS
from bench.resources import peak_gpu_mb, peak_rss_mb, reset_peaks
from bench.runner import make_optimizer
from bench.settings import Pair

REPORT = REPORTS / "perf.md"
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


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _models(case: Case) -> dict[str, Model]:
    torch.manual_seed(0)
    encoder = shaped_model(case.shape).to(_device())
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
    return {name: model.to(_device()) for name, model in models.items()}


def _batch(case: Case, vocab: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    shape = (case.batch, case.length)
    batch = {
        "input_ids": torch.randint(5, vocab, shape, generator=generator),
        "attention_mask": torch.ones(shape, dtype=torch.long),
        "token_type_ids": torch.zeros(shape, dtype=torch.long),
        "labels": torch.randint(0, LABELS[TASK], shape, generator=generator),
    }
    return {name: tensor.to(_device()) for name, tensor in batch.items()}


def _train_step(model: Model, optimizer: torch.optim.Optimizer, batch: dict, pair: Pair) -> None:
    """What a timed train step is: forward, backward and the runner's optimizer step."""
    model.train()
    model(batch, pair).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _child(command: list[str], failed: str, threads: int | None = None) -> str:
    """The standard output of `command`, run in a fresh process (with `threads` CPU threads);
    TrainingError "perf: FAILED: <its last line of errors>" when it fails."""
    env = None if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise TrainingError(f"perf: {failed}: {last}")
    return done.stdout


def _last_json(stdout: str) -> dict:
    """The JSON object a child process printed last."""
    return json.loads(stdout.strip().splitlines()[-1])


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():  # kernels run asynchronously: wait for them
        torch.cuda.synchronize()
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

    def eval_step(name: str) -> None:
        with torch.no_grad():
            models[name](batch, pair)

    hyperx = models["hyperx"]
    for round_ in range(repeats + 1):  # round 0 warms up (allocations, optimizer state)
        for name in models:
            seconds = _seconds(
                lambda name=name: _train_step(models[name], optimizers[name], batch, pair)
            )
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


def machine() -> str:
    """What the figures were measured on: the GPU's name, or the CPU's and its cores."""
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name()}"
    cpuinfo = Path("/proc/cpuinfo")
    names = [
        line.partition(":")[2].strip()
        for line in (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
        if line.startswith("model name")
    ]
    return f"CPU {names[0] if names else 'unknown'}, {os.cpu_count()} cores, no GPU"


def render(timings: list[Timing], *, command: str, threads: int, repeats: int) -> str:
    lines = [
        "# Performance",
        "",
        f"Regenerate: `{command}`. Measured on: {machine()}.",
        "",
        "## Hyper-X step time against a static adapter of the same size",
        "",
        f"{threads} CPU threads, median of {repeats} steps after one warm-up; both models",
        "alternate on the same batch in one process.",
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


SHAPED = Case("mbert-base", 8, 128, 0)  # per-method steps: each method's own bottleneck


def method_steps(method: str, case: Case = SHAPED, repeats: int = 3) -> dict[str, float]:
    """One method's train and eval step on a randomly initialised backbone of `case.shape`, with
    its default options: medians and spread in seconds, tokens per second, trained parameters and
    the memory peaks of the process since it began building the model."""
    reset_peaks()
    torch.manual_seed(0)
    chosen = METHODS.get(method)
    config = chosen.Config().with_values({"mlm": False})
    plan, _ = stand_in_plan(1, 1)
    backbone = Backbone(case.shape, shaped_model(case.shape), tokenizer=None, init="random")
    model = chosen.build(backbone, plan, stand_in_tasks([TASK]), config).to(_device())
    batch = _batch(case, model.encoder.config.vocab_size)
    pair = Pair(TASK, "l00")
    optimizer = make_optimizer(model.trainable_parameters(), config.lr, config.weight_decay)

    def eval_step() -> None:
        model.eval()
        model.prepare_eval(pair)
        with torch.no_grad():
            model(batch, pair)

    train, evals = [], []
    for round_ in range(repeats + 1):  # round 0 warms up
        seconds = _seconds(lambda: _train_step(model, optimizer, batch, pair)), _seconds(eval_step)
        if round_:
            train.append(seconds[0])
            evals.append(seconds[1])
    tokens = case.batch * case.length
    return {
        "trained": sum(p.numel() for p in model.trainable_parameters()),
        "train_s": statistics.median(train),
        "train_min": min(train),
        "train_max": max(train),
        "eval_s": statistics.median(evals),
        "train_tokens_per_s": tokens / statistics.median(train),
        "eval_tokens_per_s": tokens / statistics.median(evals),
        "peak_rss_mb": peak_rss_mb(),
        "peak_gpu_mb": peak_gpu_mb() or 0.0,
    }


def shaped_steps(
    methods: list[str], *, repeats: int, threads: int, case: Case = SHAPED
) -> dict[str, dict]:
    """`method_steps` of each method, each in a fresh process."""
    figures = {}
    for method in methods:
        print(f"timing {method} on {case.shape}, batch {case.batch} x {case.length} ...")
        code = (
            "import json; from bench import perf, plugins; plugins.load_builtins(); "
            f"case = perf.Case(**{dataclasses.asdict(case)!r}); "
            f"print(json.dumps(perf.method_steps({method!r}, case, repeats={repeats})))"
        )
        stdout = _child([sys.executable, "-c", code], f"timing {method} failed", threads)
        figures[method] = _last_json(stdout)
    return figures


def render_shaped(figures: dict[str, dict], *, repeats: int, threads: int) -> str:
    memory = "peak GPU MB" if torch.cuda.is_available() else "peak RSS MB"
    lines = [
        f"## Every method on the {SHAPED.shape} shape",
        "",
        f"One task ({TASK}), batch {SHAPED.batch} x {SHAPED.length}, random weights, each method "
        f"with its own defaults (`bench list --options`) in a fresh "
        f"process ({threads} threads); median of {repeats} steps after one warm-up. A train step "
        "is forward, backward and AdamW; an eval step a forward pass without gradients. Memory "
        "is the process's peak, backbone included.",
        "",
        f"| method | trained params | train step s (min-max) | train tokens/s | eval tokens/s "
        f"| {memory} |",
        "|---|---|---|---|---|---|",
    ]
    for method, f in figures.items():
        peak = f["peak_gpu_mb"] if torch.cuda.is_available() else f["peak_rss_mb"]
        lines.append(
            f"| `{method}` | {int(f['trained']):,} "
            f"| {f['train_s']:.3f} ({f['train_min']:.3f}-{f['train_max']:.3f}) "
            f"| {f['train_tokens_per_s']:,.0f} | {f['eval_tokens_per_s']:,.0f} | {peak:,.0f} |"
        )
    return "\n".join(lines) + "\n"


DATA_PARALLEL_METHOD = "hyperx-small"


def render_data_parallel(one: MethodRun, two: MethodRun, *, steps: int, threads: int) -> str:
    """One process with `threads` threads against two data-parallel processes of one thread
    each: the same cores, the same batches."""
    a, b = one.metrics, two.metrics
    speedup = b["throughput/tokens_per_s"] / a["throughput/tokens_per_s"]
    where = (
        f"{torch.cuda.device_count()} GPU(s), NCCL"
        if torch.cuda.is_available()
        else f"CPU, gloo, {threads} threads in all"
    )
    return (
        "\n".join(
            [
                "## Data-parallel training",
                "",
                f"`bench run --method {DATA_PARALLEL_METHOD} --max-steps {steps}` in one process "
                f"({threads} threads) and with `--processes 2` (one thread each) on the same "
                f"machine ({where}). Both train on the same batches (tokens trained: "
                f"{int(a['tokens/train']):,} and {int(b['tokens/train']):,}).",
                "",
                "| processes | train tokens/s | train s | peak RSS MB (process 0) |",
                "|---|---|---|---|",
                f"| 1 | {a['throughput/tokens_per_s']:,.0f} | {a['time/train_s']:.1f} "
                f"| {a['memory/peak_rss_mb']:,.0f} |",
                f"| 2 | {b['throughput/tokens_per_s']:,.0f} | {b['time/train_s']:.1f} "
                f"| {b['memory/peak_rss_mb']:,.0f} |",
                "",
                f"Two processes reach {speedup:.2f} x the one process's throughput.",
            ]
        )
        + "\n"
    )


def preprocessing(suite: str, method: str = "hyperx") -> list[dict[str, float]]:
    """The data preparation of a `method` run on `suite`, twice, each in a fresh process on one
    fresh output folder: encoding every split, then reading the encodings from the cache."""
    code = (
        "import json, sys; from pathlib import Path; from bench import plugins, runner; "
        "plugins.load_builtins(); "
        f"p = runner.prepare(runner.Request({method!r}, suite={suite!r}, "
        "output=Path(sys.argv[1]), progress=False)); "
        "print(json.dumps({'data_s': p.data_s, 'encoded': sum(not d.cached for d in "
        "p.data.values()), 'cached': sum(d.cached for d in p.data.values()), "
        "'examples': sum(len(d) for d in p.data.values())}))"
    )
    attempts = []
    with tempfile.TemporaryDirectory(prefix="bench-perf-") as folder:
        for attempt in ("encoding", "from the cache"):
            print(f"preparing the data of {suite} ({attempt}) ...", flush=True)
            stdout = _child([sys.executable, "-c", code, folder], f"preparing {suite} failed")
            attempts.append(_last_json(stdout))
    return attempts


def render_preprocessing(suite: str, attempts: list[dict[str, float]]) -> str:
    cold, warm = attempts
    lines = [
        f"## Preprocessing: {suite}",
        "",
        "A run's data preparation (`time/data_s`: reading every split it uses and encoding it, "
        "or reading the encoding from `<output>/cache`), twice in fresh processes on one output "
        "folder:",
        "",
        "| attempt | splits encoded | splits from the cache | examples | seconds |",
        "|---|---|---|---|---|",
    ]
    for name, a in (("first", cold), ("second", warm)):
        lines.append(
            f"| {name} | {int(a['encoded'])} | {int(a['cached'])} | {int(a['examples']):,} "
            f"| {a['data_s']:.1f} |"
        )
    speedup = cold["data_s"] / warm["data_s"]
    lines += ["", f"The cache makes it {speedup:.1f} x faster; what is left is reading the data."]
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


def run_methods(
    methods: list[str], *, steps: int, threads: int, processes: int = 1
) -> list[MethodRun]:
    """Each method trained for `steps` on the demo suite in its own `bench run` process (in
    `processes` data-parallel ones, `threads` threads each)."""
    from mlflow.tracking import MlflowClient

    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-perf-") as folder:
        for method in methods:
            print(f"running {method} on the demo suite, {steps} steps ...", flush=True)
            command = [sys.executable, "-m", "bench", "run", "--method", method, "--output",
                       folder, "--max-steps", str(steps), "--eval-every", str(steps),
                       "--no-progress", "--processes", str(processes)]  # fmt: skip
            _child(command, f"the {method} run failed", threads)
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
