"""The runner: Plan -> trained models -> scores, logged to MLflow.

Everything that can be wrong with the input (names, values, data, backbone, output folder) is
checked in `prepare`, before any MLflow run exists; `execute` then trains and evaluates.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from huggingface_hub import snapshot_download
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from bench import backbone as demo_backbone
from bench import plugins, suites
from bench.config import TrainConfig
from bench.data import Collator, PairData, PairSampler, load_pair
from bench.errors import BenchError, Stopped, TrainingError
from bench.evaluation import PairResult, evaluate, summarize
from bench.method import METHODS, Backbone, Method, MethodConfig, Model, Stage, count_parameters
from bench.references import References
from bench.resources import Stopwatch, peak_gpu_mb, peak_rss_mb, reset_peaks
from bench.settings import SETTINGS, EvalPair, ModelPlan, Pair, Plan, TrainPair
from bench.suites import Suite
from bench.tracking import Tracker, git_state, resolve_uri


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


@dataclasses.dataclass
class Prepared:
    request: Request
    suite: Suite
    method: type[Method]
    method_config: MethodConfig
    train: TrainConfig
    plan: Plan
    tokenizer: PreTrainedTokenizerBase
    data: dict[tuple, PairData]  # data_key(train or eval pair) -> its examples
    references: dict[tuple[str, str], References]  # (model, task) -> fitted references
    stages: dict[str, tuple[Stage, ...]]  # model name -> what the method trains before it
    started: float  # perf_counter() when preparation began: the run's wall time counts from it
    device: torch.device = dataclasses.field(
        default_factory=lambda: torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )

    def examples(self, pair: Pair, split: str) -> PairData:
        """The loaded data of `pair`'s `split` (the first loaded, when parts of it were)."""
        return next(d for key, d in self.data.items() if key[1:3] == (pair, split))


@dataclasses.dataclass
class RunResult:
    run_id: str
    experiment_id: str
    tracking_uri: str
    pairs: list[PairResult]
    metrics: dict[str, float]


def prepare(request: Request) -> Prepared:
    started = time.perf_counter()
    reset_peaks()
    plugins.load_builtins()
    plugins.load_files(request.plugins)
    if request.backbone_init not in ("pretrained", "random"):
        raise BenchError(
            f"backbone init {request.backbone_init!r} is invalid; valid: pretrained, random"
        )
    suite, method, method_config, train, plan = resolve(request)
    stages = {m.name: method.stages(m, method_config) for m in plan.models}
    backbone = backbone_path(suite.backbone)  # before any output: a missing one stops here
    _check_output(request.output)
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    cache = request.output / "cache"
    data: dict[tuple, PairData] = {}
    references = {}
    for model in plan.models:
        pairs = [*model.train, *(model.mlm if method_config.mlm else ())]
        pairs += [t for stage in stages[model.name] for t in stage.pairs]
        for t in pairs:
            if data_key(t) not in data:
                data[data_key(t)] = _load(suite, t, tokenizer, train, cache)
        select_cap = train.eval_cap if train.select_cap is None else train.select_cap
        for group, cap in ((model.selection, select_cap), (model.eval, train.eval_cap)):
            for e in group:
                if data_key(e) not in data:
                    data[data_key(e)] = load_pair(
                        suite.task(e.pair.task), e.pair.language, e.split, tokenizer,
                        max_length=train.max_length, exclude=e.exclude, cap=cap, cache_dir=cache,
                    )  # fmt: skip
        targets = {e.pair for e in model.eval if e.role == "target"}  # few shots are no source
        for task in model.tasks:
            rows = [
                row
                for t in model.train
                if t.pair.task == task and t.pair not in targets
                for row in data[data_key(t)].rows
            ]
            references[(model.name, task)] = References(suite.task(task), rows)
    return Prepared(
        request, suite, method, method_config, train, plan, tokenizer, data, references, stages,
        started,
    )  # fmt: skip


def data_key(item: TrainPair | EvalPair) -> tuple:
    """What identifies the examples of a training or evaluation pair: the same split of a pair
    can be trained on in part and select the model on the rest (`pos/eng@dev[:1800]`)."""
    if isinstance(item, TrainPair):
        return ("train", item.pair, item.split, item.cap, item.indices)
    return ("eval", item.pair, item.split, item.exclude)


def resolve(request: Request) -> tuple[Suite, type[Method], MethodConfig, TrainConfig, Plan]:
    """The suite, method, validated configs and Plan a request names; no data is loaded."""
    suite = suites.get(request.suite)
    if request.tasks:
        suite = suite.restricted(request.tasks)
    setting = SETTINGS.get(request.setting)
    method = METHODS.get(request.method)
    defaults = suite.method_options.get(method.name, {})
    method_config = method.Config().with_values({**defaults, **request.method_options})
    train = suite.train.with_values(request.train)
    plan = setting.build(suite, request.seed, train)
    for model_plan in plan.models:
        method.check(model_plan, method_config)
    return suite, method, method_config, train, plan


def run_params(
    request: Request, suite: Suite, method_config: MethodConfig, train: TrainConfig
) -> dict[str, Any]:
    """What a run logs as its params: everything that decides what it computes."""
    return {
        "method": request.method,
        "setting": request.setting,
        "suite": suite.name,
        "seed": request.seed,
        "backbone": suite.backbone,
        "backbone.init": request.backbone_init,
        **method_config.flat(),
        **train.flat(),
    }


def backbone_path(spec: str) -> Path:
    """The folder of a suite's backbone: "demo" is the shipped one, checked against its checksum."""
    if spec == "demo":
        demo_backbone.verify(demo_backbone.DEMO_DIR)
        return demo_backbone.DEMO_DIR
    path = Path(spec)
    if not path.exists() and HUB_ID.fullmatch(spec):
        return _hub_backbone(spec)
    if not (path / "config.json").exists():
        raise BenchError(f"backbone folder {path} has no config.json (expected a saved model)")
    return path


HUB_ID = re.compile(r"[\w.-]+/[\w.-]+(@[\w./-]+)?")  # org/name, or org/name@revision
# What a run reads of a hub backbone: its config, weights and tokenizer, not every format the
# repository ships (mBERT's also holds TensorFlow and Flax weights).
HUB_FILES = ["config.json", "*.safetensors", "tokenizer*", "vocab*", "special_tokens_map.json",
             "sentencepiece*", "*.model"]  # fmt: skip


@functools.cache  # backbone_path runs several times a run: ask the hub once per process
def _hub_backbone(spec: str) -> Path:
    """A hub backbone (`org/name@revision`) in the local Hugging Face cache, downloaded once."""
    repo, _, revision = spec.partition("@")
    try:
        return Path(snapshot_download(repo, revision=revision or None, allow_patterns=HUB_FILES))
    except (OSError, ValueError) as error:  # offline and not cached: LocalEntryNotFoundError
        raise BenchError(
            f"backbone {spec} is not in the local Hugging Face cache and cannot be downloaded "
            f"({type(error).__name__}); run once where the hub can be reached "
            "(HF_HUB_OFFLINE unset), or name a local model folder"
        ) from None


def backbone_identity(spec: str) -> str:
    """Changes whenever the backbone's weights would: the demo's recorded checksum, or a local
    folder's config and the size and time of its weight files (hashing GBs on every run is slow)."""
    path = backbone_path(spec)
    if spec == "demo":
        return json.loads((path / "build.json").read_text())["sha256"]
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for weights in sorted([*path.glob("*.safetensors"), *path.glob("*.bin")]):
        stat = weights.stat()
        digest.update(f"{weights.name} {stat.st_size} {stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def _load(suite: Suite, t, tokenizer, train: TrainConfig, cache: Path) -> PairData:
    return load_pair(
        suite.task(t.pair.task), t.pair.language, t.split, tokenizer,
        max_length=train.max_length, cap=t.cap, indices=t.indices, cache_dir=cache,
    )  # fmt: skip


def load_backbone(spec: str, init: str) -> tuple[PreTrainedModel, frozenset[str]]:
    """The suite's masked-LM backbone, and the names of the weights its checkpoint lacked (the
    MLM head of an encoder published without one, such as e5). `init="random"` keeps the shape
    but not the weights (a control: transfer that also appears on a random backbone is not due
    to pretraining)."""
    path = backbone_path(spec)
    config = AutoConfig.from_pretrained(path)
    if init == "random":
        return AutoModelForMaskedLM.from_config(config, **attention(config)), frozenset()
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the lacking weights are handled, not news
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(
            path, output_loading_info=True, **attention(config)
        )
    finally:
        transformers.logging.set_verbosity(verbosity)
    return model, frozenset(info["missing_keys"])


def attention(config: PretrainedConfig) -> dict[str, str]:
    """SDPA cannot do relative position embeddings (the demo backbone's): name the attention that
    can, rather than rely on transformers' fallback and its warning."""
    relative = getattr(config, "position_embedding_type", "absolute") != "absolute"
    return {"attn_implementation": "eager"} if relative else {}


def _check_output(output: Path) -> None:
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise BenchError(f"output folder {output} is not writable: {error.strerror}") from None


def execute(prepared: Prepared) -> RunResult:
    request, plan = prepared.request, prepared.plan
    uri = resolve_uri(request.output, request.tracking_uri)
    tracker = Tracker(uri, prepared.suite.name, request.output / "artifacts")
    params = run_params(request, prepared.suite, prepared.method_config, prepared.train)
    tags = {
        "method": request.method,
        "setting": plan.setting,
        "suite": plan.suite,
        "seed": str(request.seed),
        **git_state(),
        **request.tags,
    }
    name = tags.get("mlflow.runName") or f"{request.method}-{plan.setting}-s{request.seed}"
    tracker.start(name, params, tags)
    try:
        result = _train_and_evaluate(prepared, tracker)
    except Stopped as error:  # asked for, not a failure: the run ends where it was stopped
        tracker.tags({"stopped": str(error)[:5000]})
        tracker.end("KILLED")
        raise
    except BaseException as error:
        tracker.tags({"error": f"{type(error).__name__}: {error}"[:5000]})
        tracker.end("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    tracker.end()
    return result


def _train_and_evaluate(prepared: Prepared, tracker: Tracker) -> RunResult:
    request = prepared.request
    checkpoints = request.output / "checkpoints" / tracker.run_id
    checkpoints.mkdir(parents=True, exist_ok=True)
    pair_results: list[PairResult] = []
    train_time, eval_time, stage_time = Stopwatch(), Stopwatch(), Stopwatch()
    tokens, trainable, total, stages_trained = 0, 0, 0, 0
    selected: list[float] = []  # each model's best model-selection score
    staged: dict[str, int] = {}  # stage -> parameters it trained: counted once per run
    for model_plan in prepared.plan.models:
        with stage_time:
            folders, trained = run_stages(prepared, model_plan, tracker)
        stages_trained += trained
        transformers.set_seed(request.seed)
        model = build_model(prepared, model_plan, folders).to(prepared.device)
        if notes := model.notes():
            tracker.tags({f"note.{key}": value for key, value in notes.items()})
        collator = Collator(
            prepared.tokenizer, prepared.train.mlm_probability, request.seed, prepared.device
        )
        model_trainable, model_total = count_parameters(model)
        trainable += model_trainable
        total += model_total
        counts: dict[str, int] = {}
        for name, parameter in model.named_parameters():
            if stage := model.stage_of(name):
                counts[stage] = counts.get(stage, 0) + parameter.numel()
        staged.update(counts)  # the models of single-task share their stages: each counts once
        with train_time:
            path = checkpoints / f"{model_plan.name}.safetensors"
            model_tokens, best = _train(prepared, model_plan, model, collator, tracker, path)
            tokens += model_tokens
            selected.append(best)
        with eval_time:
            for e in model_plan.eval:
                data = prepared.data[data_key(e)]
                refs = prepared.references[(model_plan.name, e.pair.task)]
                task = prepared.suite.task(e.pair.task)
                pair_results.append(
                    evaluate(model, task, data, e, refs, prepared.train, model_plan.name, collator)
                )
    metrics = summarize(pair_results)
    metrics.update(
        {
            "select/score": sum(selected) / len(selected),
            "params/trainable": trainable,
            "params/total": total,
            "params/stage_trained": sum(staged.values()),
            "memory/peak_rss_mb": peak_rss_mb(),
            "memory/peak_gpu_mb": peak_gpu_mb(),
            "time/train_s": train_time.seconds,
            "time/eval_s": eval_time.seconds,
            "time/stages_s": stage_time.seconds,
            "stages/trained": stages_trained,
            "stages/cached": sum(len(s) for s in prepared.stages.values()) - stages_trained,
            "time/wall_s": time.perf_counter() - prepared.started,
            "throughput/tokens_per_s": tokens / max(train_time.seconds, 1e-9),
        }
    )
    tracker.metrics(metrics)
    tracker.artifact(
        dataclasses.asdict(prepared.train) | prepared.method_config.flat(), "config.json"
    )
    tracker.artifact(prepared.plan.to_dict(), "plan.json")
    results = {
        "run_id": tracker.run_id,
        "method": request.method,
        "setting": prepared.plan.setting,
        "suite": prepared.plan.suite,
        "seed": request.seed,
        "metrics": metrics,
        "pairs": [dataclasses.asdict(r) for r in pair_results],
    }
    tracker.artifact(results, "results.json")
    return RunResult(tracker.run_id, tracker.experiment_id, tracker.uri, pair_results, metrics)


def build_model(
    prepared: Prepared, model_plan: ModelPlan, stages: dict[str, Path] | None = None
) -> Model:
    """The method's model for `model_plan`; `stages` holds the folders of its trained stages
    (`run_stages`), and is required when the method has any."""
    suite, request = prepared.suite, prepared.request
    missing = {stage.name for stage in prepared.stages[model_plan.name]} - set(stages or {})
    if missing:
        raise ValueError(f"stages {sorted(missing)} are not trained yet")
    model, untrained = load_backbone(suite.backbone, request.backbone_init)
    backbone = Backbone(
        suite.backbone, model, prepared.tokenizer, request.backbone_init, dict(stages or {}),
        untrained,
    )  # fmt: skip
    names = list(model_plan.tasks) + (["mlm"] if prepared.method_config.mlm else [])
    tasks = {name: suite.task(name) for name in names}
    return prepared.method.build(backbone, model_plan, tasks, prepared.method_config)


def run_stages(prepared: Prepared, plan: ModelPlan, tracker: Tracker) -> tuple[dict, int]:
    """Trains the stages of `plan` that are not cached yet; returns (stage name -> folder, how
    many were trained now)."""
    folders, trained = {}, 0
    backbone = backbone_identity(prepared.suite.backbone)
    cache = prepared.request.output / "cache" / "stages"
    for stage in prepared.stages[plan.name]:
        key = _stage_key(prepared, stage, backbone)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        # a folder named by everything that changes what the stage learns
        folder = cache / f"{prepared.method.name}-{stage.name}-{digest}"
        if not folder.is_dir():
            _train_stage(prepared, stage, folder, tracker, key)
            trained += 1
        folders[stage.name] = folder
    return folders, trained


def _stage_key(prepared: Prepared, stage: Stage, backbone: str) -> dict[str, Any]:
    request = prepared.request
    return {
        "method": prepared.method.name,
        "stage": stage.name,
        "key": dict(stage.key),
        "budget": [stage.steps, stage.lr, stage.batch_size, stage.seed],
        "loop": [prepared.train.warmup_ratio, prepared.train.max_grad_norm],
        "masking": prepared.train.mlm_probability,
        "temperature": prepared.train.temperature if len(stage.pairs) > 1 else None,
        "backbone": backbone,
        "init": request.backbone_init,
        # a random backbone is drawn with the run's seed: its stages are that seed's alone
        "backbone_seed": request.seed if request.backbone_init == "random" else None,
        "data": [prepared.data[data_key(t)].fingerprint for t in stage.pairs],
    }


def _train_stage(
    prepared: Prepared, stage: Stage, folder: Path, tracker: Tracker, key: dict[str, Any]
) -> None:
    request, suite = prepared.request, prepared.suite
    transformers.set_seed(request.seed)  # the random backbone of this run, if random
    model, untrained = load_backbone(suite.backbone, request.backbone_init)
    backbone = Backbone(
        suite.backbone, model, prepared.tokenizer, request.backbone_init, untrained=untrained
    )
    transformers.set_seed(stage.seed)
    tasks = {t.pair.task: suite.task(t.pair.task) for t in stage.pairs}
    model = stage.build(backbone, tasks).to(prepared.device)
    collator = Collator(
        prepared.tokenizer, prepared.train.mlm_probability, stage.seed, prepared.device
    )
    data = {t.pair: prepared.data[data_key(t)] for t in stage.pairs}
    _fit(
        prepared, model, data, collator, tracker, label=stage.name, steps=stage.steps,
        lr=stage.lr, batch_size=stage.batch_size, seed=stage.seed,
    )  # fmt: skip
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    stage.save(model, partial)
    (partial / "stage.json").write_text(json.dumps(key, indent=2, sort_keys=True) + "\n")
    partial.rename(folder)  # a crash mid-save never leaves a folder that looks complete


def _train(
    prepared: Prepared,
    plan: ModelPlan,
    model: Model,
    collator: Collator,
    tracker: Tracker,
    path: Path,
) -> tuple[int, float]:
    """Trains `model` in place, leaves it at its best model-selection checkpoint; returns the
    tokens seen and the best model-selection score."""
    pairs = [*plan.train, *(plan.mlm if prepared.method_config.mlm else ())]
    best = -math.inf

    def select(step: int) -> None:
        nonlocal best
        last = step == prepared.train.max_steps and plan is prepared.plan.models[-1]
        score = _select(prepared, plan, model, collator, tracker, step, last)
        if score > best:
            best = score
            model.save(str(path))

    tokens = _fit(
        prepared, model, {t.pair: prepared.data[data_key(t)] for t in pairs}, collator,
        tracker, label=plan.name, steps=prepared.train.max_steps, lr=prepared.method_config.lr,
        batch_size=prepared.train.batch_size, seed=prepared.request.seed, select=select,
    )  # fmt: skip
    model.load(str(path))
    return tokens, best


def _fit(
    prepared: Prepared,
    model: Model,
    data: dict[Pair, PairData],
    collator: Collator,
    tracker: Tracker,
    *,
    label: str,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    select: Callable[[int], None] | None = None,
) -> int:
    """The training loop: temperature-sampled pairs, AdamW with linear warm-up and decay,
    clipping, a NaN guard; `select(step)` every `train.eval_every` steps. Returns tokens seen."""
    cfg = prepared.train
    kinds = {pair: d.kind for pair, d in data.items()}
    parameters = model.trainable_parameters()
    optimizer = make_optimizer(parameters, lr, prepared.method_config.weight_decay)
    warmup = int(cfg.warmup_ratio * steps)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, warmup, steps)
    sampler = iter(PairSampler(data, batch_size, cfg.temperature, seed))
    tokens, losses = 0, []
    bar = tqdm(range(1, steps + 1), desc=f"train {label}", disable=not prepared.request.progress)
    for step in bar:
        pair, indices = next(sampler)
        model.train()
        batch = collator(data[pair].examples(indices), kinds[pair])
        loss = model(batch, pair).loss
        if not torch.isfinite(loss):
            raise TrainingError(f"non-finite loss {loss.item()} at step {step} on pair {pair}")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
        losses.append(loss.item())
        if step % 50 == 0 or step == steps:
            tracker.metrics({f"train/{label}/loss": sum(losses) / len(losses)}, step)
            bar.set_postfix(loss=f"{sum(losses) / len(losses):.3f}")
            losses = []
        if select is not None and (step % cfg.eval_every == 0 or step == steps):
            select(step)
    return tokens


def make_optimizer(
    parameters: list[torch.nn.Parameter], lr: float, weight_decay: float = 0.0
) -> torch.optim.AdamW:
    """AdamW, fused: one kernel over all parameters instead of a loop of small ones (measured on
    a 76 M-parameter hypernetwork on CPU: 0.03 s per step against 0.24 s unfused)."""
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=True)


def _select(
    prepared: Prepared,
    plan: ModelPlan,
    model: Model,
    collator: Collator,
    tracker: Tracker,
    step: int,
    last: bool,
) -> float:
    """Scores the model-selection pairs; their mean primary metric picks the best checkpoint."""
    scores = {}
    for e in plan.selection:
        data = prepared.data[data_key(e)]
        task = prepared.suite.task(e.pair.task)
        result = evaluate(model, task, data, e, None, prepared.train, plan.name, collator)
        scores[f"select/{e.pair.task}/{e.pair.language}/{result.metric}"] = result.score
    mean = sum(scores.values()) / len(scores)
    tracker.metrics({**scores, f"select/{plan.name}/score": mean}, step)
    if prepared.request.on_select is not None:
        prepared.request.on_select(mean, last)
    return mean
