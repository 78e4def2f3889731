"""`python -m bench perf --precision SUITE`: bfloat16 autocast against float32 on a suite's
backbone and this machine. One model, one process: training steps on the same batches, the
precisions alternating step by step, so that drift on a shared machine hits both alike; then every
test set of the mixed Plan evaluated whole in each precision, and how often the two predict the
same label. Whether bf16 also trains to the same scores is a question for whole runs over seeds
(`bench compare ... --set train.precision=bf16`), which this does not answer."""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

import torch

from bench import runner
from bench.data import Collator, PairSampler
from bench.evaluation import autocast, cpu_flags, predict, scored
from bench.metrics import METRICS
from bench.perf import machine
from bench.runner import Request, data_key, make_optimizer
from bench.task import Kind

PRECISIONS = ("fp32", "bf16")


@dataclasses.dataclass
class Figures:
    suite: str
    method: str
    steps: dict[str, list[float]]  # precision -> seconds per training step
    eval_s: dict[str, list[float]]  # precision -> seconds to evaluate every test set
    pairs: int
    examples: int
    tokens: int  # the evaluated sequences' tokens (windows included)
    same: dict[str, tuple[int, int]]  # kind -> (predictions equal in both precisions, of all)
    score_gap: float  # the largest difference of a pair's score between the precisions, points
    labels: dict[str, tuple[int, int]]  # task -> (labels fp32 predicted anywhere, of its labels)
    batch: tuple[int, float]  # training batch: examples, mean tokens


def measure(suite: str, method: str, *, steps: int, repeats: int, output: Path) -> Figures:
    request = Request(
        method=method, suite=suite, setting="mixed", output=output, progress=False,
        train={"eval_cap": None},
    )  # fmt: skip
    prepared = runner.prepare(request)
    plan = prepared.plan.models[0]
    device = prepared.device
    torch.manual_seed(0)
    model = runner.build_model(prepared, plan).to(device)
    pairs = [*plan.train, *(plan.mlm if prepared.method_config.mlm else ())]
    data = {t.pair: prepared.data[data_key(t)] for t in pairs}
    train = prepared.train
    sampler = PairSampler(data, train.batch_size, train.temperature, 0, steps=steps)
    collator = Collator(prepared.tokenizer, train.mlm_probability, 0, device)
    batches = [(pair, collator(data[pair].examples(i), data[pair].kind)) for pair, i in sampler]
    optimizer = make_optimizer(model.trainable_parameters(), prepared.method_config.lr)
    times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    model.train()
    for step, (pair, batch) in enumerate([batches[0], *batches]):  # the first warms up
        order = PRECISIONS if step % 2 else PRECISIONS[::-1]
        for precision in order:
            start = time.perf_counter()
            with autocast(precision, device):
                loss = model(batch, pair).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step:
                times[precision].append(time.perf_counter() - start)
    evals = list(plan.eval)
    eval_s: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    predicted: dict[str, list] = {}
    for attempt in range(repeats):
        for precision in PRECISIONS if attempt % 2 == 0 else PRECISIONS[::-1]:
            start = time.perf_counter()
            predicted[precision] = [
                predict(
                    model, prepared.suite.task(e.pair.task), prepared.data[data_key(e)],
                    collator, train.eval_batch_size, precision,
                )
                for e in evals
            ]  # fmt: skip
            eval_s[precision].append(time.perf_counter() - start)
    same: dict[str, list[int]] = {}
    used: dict[str, set] = {}
    gap = 0.0
    for e, fp32, bf16 in zip(evals, predicted["fp32"], predicted["bf16"], strict=True):
        task = prepared.suite.task(e.pair.task)
        kind = "words" if task.kind is Kind.TOKEN else "sentences"
        flat32 = [w for p in fp32 for w in p] if task.kind is Kind.TOKEN else fp32
        flat16 = [w for p in bf16 for w in p] if task.kind is Kind.TOKEN else bf16
        used.setdefault(task.name, set()).update(flat32)
        counts = same.setdefault(kind, [0, 0])
        counts[0] += sum(a == b for a, b in zip(flat32, flat16, strict=True))
        counts[1] += len(flat32)
        gold = prepared.data[data_key(e)].row_columns[
            "tags" if task.kind is Kind.TOKEN else "label"
        ]
        metric = METRICS[task.family.metric]
        scores = [metric(gold, scored(p, task.labels)) for p in (fp32, bf16)]
        gap = max(gap, abs(scores[0] - scores[1]))
    evaluated = [prepared.data[data_key(e)] for e in evals]
    tokens = statistics.fmean(int(b["attention_mask"].sum()) for _, b in batches)
    return Figures(
        suite=prepared.suite.name, method=method, steps=times, eval_s=eval_s, pairs=len(evals),
        examples=sum(len(d.rows) for d in evaluated), tokens=sum(d.tokens for d in evaluated),
        same={k: (v[0], v[1]) for k, v in same.items()}, score_gap=gap,
        labels={t: (len(u), len(prepared.suite.task(t).labels)) for t, u in used.items()},
        batch=(train.batch_size, tokens / train.batch_size),
    )  # fmt: skip


def render(figures: Figures, *, command: str, threads: int, load: str) -> str:
    step = {p: statistics.median(v) for p, v in figures.steps.items()}
    evals = {p: statistics.median(v) for p, v in figures.eval_s.items()}
    examples, mean_tokens = figures.batch
    lines = [
        f"# bf16 against fp32: {figures.suite}, {figures.method}",
        "",
        f"Written by `{command}` on {machine()} (bfloat16 features: {cpu_flags()}), "
        f"{threads} threads; {load}. bf16 is `torch.autocast` to bfloat16 (`train.precision`); "
        "the weights stay float32.",
        "",
        "| | fp32 | bf16 | fp32 / bf16 |",
        "|---|---|---|---|",
        f"| training step, median of {len(step and figures.steps['fp32'])} "
        f"({examples} examples of {mean_tokens:.0f} tokens), s "
        f"| {step['fp32']:.3f} | {step['bf16']:.3f} | {step['fp32'] / step['bf16']:.2f} |",
        f"| every test set whole ({figures.pairs} pairs, {figures.examples:,} examples, "
        f"{figures.tokens:,} tokens), s | {evals['fp32']:.1f} | {evals['bf16']:.1f} "
        f"| {evals['fp32'] / evals['bf16']:.2f} |",
        f"| evaluation tokens/s | {figures.tokens / evals['fp32']:,.0f} "
        f"| {figures.tokens / evals['bf16']:,.0f} | |",
        "",
    ]
    labelled = ", ".join(
        f"{used} of {total} {task} labels" for task, (used, total) in figures.labels.items()
    )
    agree = "; ".join(
        f"{same / total:.2%} of {total:,} {kind}" for kind, (same, total) in figures.same.items()
    )
    lines += [
        f"The same model predicts the same label in both precisions for {agree}; a test pair's "
        f"score differs by at most {figures.score_gap:.2f} points between them. The model is the "
        "method's as built, then trained by the timed steps (both precisions, interleaved): "
        f"it predicts {labelled} anywhere in fp32. A model that predicts few labels agrees with "
        "itself easily; whether bf16 trains to the same scores takes whole runs.",
        "",
    ]
    return "\n".join(lines)
