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
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import transformers
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from bench import distributed, interrupts, overlap, suites, typology
from bench.backbone import backbone_identity, backbone_path, sha256
from bench.checkpoint import Checkpoint, Checkpoints, restore, training_state
from bench.config import TrainConfig
from bench.data import Collator, PairData, PairSampler, load_pair
from bench.errors import BenchError, Stopped, TrainingError
from bench.evaluation import (
    PairResult,
    autocast,
    cpu_flags,
    evaluate,
    not_learned,
    summarize,
)
from bench.heads import IGNORE, MlmHeadModel
from bench.method import Backbone, Method, MethodConfig, Stage, variant
from bench.model import Model, count_parameters
from bench.references import References
from bench.request import Request, check_sources, resolve
from bench.resources import Stopwatch, messages_once, peak_gpu_mb, peak_rss_mb, reset_peaks
from bench.selection import Average, curve_metrics, spare_weights
from bench.settings import EvalPair, ModelPlan, Pair, Plan, TrainPair, oracle_pairs
from bench.suites import Suite
from bench.task import Kind
from bench.tracking import (
    LANGUAGE_NOTE,
    NOT_LEARNED,
    STREAM_PARAM,
    Quiet,
    Tracker,
    check_store,
    first_line,
    git_state,
    hide_password,
    input_params,
    param_text,
    resolve_uri,
)


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
    device: torch.device = dataclasses.field(default_factory=lambda: distributed.current().device)
    resumed: Checkpoint | None = None  # what `request.resume` continues from (None: the start)
    data_s: float = 0.0  # reading and encoding the data (or reading it from the cache)
    run_id: str = ""  # the MLflow run, once `execute` has started (or resumed) it
    head: Path | None = None  # the MLM-head stage's folder, where the backbone needs one
    # model name -> its target pairs' dev splits, scored apart under --oracle (train.oracle)
    oracle: dict[str, tuple[EvalPair, ...]] = dataclasses.field(default_factory=dict)

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
    notes: dict[str, str] = dataclasses.field(default_factory=dict)  # Model.language_notes


SLOW_BF16_TAG = "warning.slow_bf16"


def emulated_bf16(precision: str, device: torch.device) -> str:
    """Why bf16 will be slow here, or "": a CPU without bfloat16 instructions emulates its
    matmuls (on an AMD EPYC without them, an MLM-head step took 3 times fp32's)."""
    if precision != "bf16" or device.type != "cpu" or cpu_flags() != "none":
        return ""
    return ("train.precision=bf16 on a CPU without bfloat16 instructions (avx512_bf16, amx_bf16): "
            "its matmuls are emulated, slower than fp32's; --set train.precision=fp32")  # fmt: skip


def prepare(request: Request) -> Prepared:
    started = time.perf_counter()
    reset_peaks()
    suite, method, method_config, train, plan = resolve(request)
    stages = {m.name: method.stages(m, method_config) for m in plan.models}
    backbone = backbone_path(suite.backbone)  # before any output: a missing one stops here
    _check_remote_code(backbone, request.trust_remote_code)
    check_sources(suite, plan, stages, method_config.mlm)
    oracle = {m.name: oracle_pairs(m, suite) for m in plan.models} if train.oracle else {}
    plan = screened(plan, suite, train, oracle, trains_mlm(method_config, stages))
    stages = {m.name: method.stages(m, method_config) for m in plan.models}
    _check_output(request.output)
    Tracker.check_reachable(resolve_uri(request.output, request.tracking_uri))  # no run yet
    resumed = _resumable(request, run_params(request, suite, method_config, train))
    if request.progress and distributed.current().main:  # every check passed: the run starts
        print(f"{_header(request, suite, plan)}: {plan.size()}", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(backbone, trust_remote_code=request.trust_remote_code)
    with Stopwatch() as reading:
        data = _read_data(
            suite, plan, stages, trains_mlm(method_config, stages), train, tokenizer,
            request.output / "cache",
            request.progress and distributed.current().main, oracle,
        )  # fmt: skip
    references = {}
    for model in plan.models:
        targets = {e.pair for e in model.eval if e.role == "target"}  # few shots are no source
        for task in model.tasks:
            rows = [
                row
                for t in model.train
                if t.pair.task == task and t.pair not in targets
                for row in data[data_key(t)].row_list
            ]
            references[(model.name, task)] = References(suite.task(task), rows)
    return Prepared(
        request, suite, method, method_config, train, plan, tokenizer, data, references, stages,
        started, resumed=resumed, data_s=reading.seconds, oracle=oracle,
    )  # fmt: skip


def screened(plan: Plan, suite: Suite, train: TrainConfig, oracle: dict, mlm: bool) -> Plan:
    """The Plan after the content check (`bench.overlap.check`: a split evaluated, or scored by
    the oracle, that shares too many sentences with what the model trains or selects on is
    refused) and, with `train.deduplicate`, without the training examples whose sentences the
    model is tested on (never the oracle's: with or without it, a run trains alike)."""
    overlap.check(plan, suite, oracle, mlm)
    return overlap.deduplicate(plan, suite) if train.deduplicate else plan


def trains_mlm(method_config: MethodConfig, stages: dict[str, tuple[Stage, ...]]) -> bool:
    """Whether a run trains MLM anywhere: in its models, or in a stage (MAD-X's languages)."""
    staged = (t for model in stages.values() for stage in model for t in stage.pairs)
    return method_config.mlm or any(t.pair.task == "mlm" for t in staged)


def header(prepared: Prepared) -> str:
    """A run in one line: suite / setting / method / seed."""
    return _header(prepared.request, prepared.suite, prepared.plan)


def _header(request: Request, suite: Suite, plan: Plan) -> str:
    return f"{suite.name} / {plan.setting} / {request.method} / seed {request.seed}"


def _read_data(
    suite: Suite,
    plan: Plan,
    stages: dict,
    mlm: bool,
    train: TrainConfig,
    tokenizer,
    cache: Path,
    progress: bool,
    oracle: dict[str, tuple[EvalPair, ...]] | None = None,
) -> dict[tuple, PairData]:
    """Every split the run reads, encoded: from the on-disk cache where it is current."""
    data: dict[tuple, PairData] = {}
    reads: dict[tuple, tuple] = {}  # data key -> (what reads it first, the cap of evaluation)
    for model in plan.models:
        pairs = [*model.train, *(model.mlm if mlm else ())]
        pairs += [t for stage in stages[model.name] for t in stage.pairs]
        selection = [(e, train.selection_cap) for e in model.selection]
        selection += [(e, train.selection_cap) for e in (oracle or {}).get(model.name, ())]
        evals = [(e, train.eval_cap) for e in model.eval]
        for item, cap in [*((t, None) for t in pairs), *selection, *evals]:
            reads.setdefault(data_key(item), (item, cap))
    for key, (item, cap) in tqdm(reads.items(), desc="data", unit="split", disable=not progress):
        if isinstance(item, TrainPair):
            data[key] = _load(suite, item, tokenizer, train, cache)
        else:
            data[key] = load_pair(
                suite.task(item.pair.task), item.pair.language, item.split, tokenizer,
                max_length=train.max_length, exclude=item.exclude, cap=cap, cache_dir=cache,
                windows=True,
            )  # fmt: skip
    for key, pair_data in data.items():
        if key[0] == "train":  # the columns batches are cut from, built now, not at a first draw
            _ = pair_data.columns
    return data


def head_metrics(progress: Progress) -> dict[str, float]:
    """The MLM-head stage's held-out MLM loss before and after it trained, and whether this run
    trained it (1) or read it from the cache (0); nothing where the run needed no head."""
    if HEAD not in progress.stage_spent:
        return {}
    heldout = progress.stage_spent[HEAD]["heldout_loss"]
    return {
        **{f"{HEAD}/heldout_loss_{when}": loss for when, loss in heldout.items()},
        f"{HEAD}/trained": float(progress.head_trained),
    }


def window_metrics(data: dict[tuple, PairData]) -> dict[str, int]:
    """Per evaluated split of a token task: its words, and those beyond `train.max_length`
    sub-words, which truncation would have lost and evaluation reads in later windows."""
    metrics = {}
    for key, pair_data in data.items():
        if key[0] == "eval" and pair_data.kind is Kind.TOKEN:
            # under words/, not data/: MLflow's compare page lists metrics alphabetically and
            # shows its first rows, which should stay the scores (eval/...)
            name = f"words/{pair_data.pair.task}/{pair_data.pair.language}/{key[2]}"
            metrics[f"{name}/all"] = pair_data.words
            metrics[f"{name}/beyond_max_length"] = pair_data.cut
    return metrics


def checkpoint_folder(output: Path, run_id: str) -> Path:
    """Where a run keeps its best weights and, in `resume/`, its latest checkpoint."""
    return output / "checkpoints" / run_id


def resume_checkpoints(output: Path, run_id: str) -> Checkpoints:
    """The checkpoints `--resume` continues a run from."""
    return Checkpoints(checkpoint_folder(output, run_id) / "resume")


def _resumable(request: Request, params: dict[str, Any]) -> Checkpoint | None:
    """The checkpoint `request.resume` continues from (None: the run stopped before writing its
    first, and starts over); BenchError when the run cannot be resumed as asked."""
    if request.resume is None:
        return None
    run_id = request.resume
    uri = resolve_uri(request.output, request.tracking_uri)
    check_store(uri, f"--resume {run_id}: no such run")
    try:
        run = MlflowClient(uri).get_run(run_id)
    except MlflowException as error:
        where = hide_password(uri)
        raise BenchError(
            f"--resume {run_id}: no such run in {where} ({first_line(error)})"
        ) from None
    if run.info.status == "FINISHED":
        raise BenchError(f"--resume {run_id}: the run is FINISHED; there is nothing to resume")
    logged = input_params(run.data.params)
    asked = {k: param_text(v) for k, v in params.items()}
    for key in sorted(set(logged) | set(asked)):
        if logged.get(key) != asked.get(key):
            raise BenchError(
                f"--resume {run_id}: the run has {key}={logged.get(key, '(unset)')}, this command "
                f"{key}={asked.get(key, '(unset)')}; resume with the flags it was started with"
            )
    checkpoints = resume_checkpoints(request.output, run_id)
    checkpoint = checkpoints.latest()
    if checkpoint is None and "checkpoint" in run.data.tags:
        raise BenchError(
            f"--resume {run_id}: its checkpoint ({run.data.tags['checkpoint']}) is not in "
            f"{checkpoints.folder}; pass the --output the run was started with"
        )
    return checkpoint


def _check_remote_code(path: Path, trusted: bool) -> None:
    """A backbone that names its own modelling code (`auto_map`) runs it only when asked to."""
    for name in ("config.json", "tokenizer_config.json"):
        file = path / name
        if not trusted and file.exists() and "auto_map" in json.loads(file.read_text()):
            raise BenchError(
                f"backbone {path} ships its own code ({name} has auto_map); it runs only "
                "with --trust-remote-code, if you trust it"
            )


def data_key(item: TrainPair | EvalPair) -> tuple:
    """What identifies the examples of a training or evaluation pair: the same split of a pair
    can be trained on in part and select the model on the rest (`pos/eng@dev[:1800]`)."""
    if isinstance(item, TrainPair):
        return ("train", item.pair, item.split, item.cap, item.indices, item.exclude)
    return ("eval", item.pair, item.split, item.exclude)


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


def _load(suite: Suite, t, tokenizer, train: TrainConfig, cache: Path) -> PairData:
    return load_pair(
        suite.task(t.pair.task), t.pair.language, t.split, tokenizer,
        max_length=train.max_length, cap=t.cap, indices=t.indices, exclude=t.exclude,
        cache_dir=cache,
    )  # fmt: skip


def load_backbone(
    spec: str, init: str, trust_remote_code: bool = False, head: Path | None = None
) -> tuple[PreTrainedModel, frozenset[str]]:
    """The suite's masked-LM backbone, and the names of the weights its checkpoint lacked (the
    MLM head of an encoder published without one, such as e5) and `head` (the MLM-head stage's
    folder, `mlm_head`) did not provide. `init="random"` keeps the shape but not the weights (a
    control: transfer that also appears on a random backbone is not due to pretraining)."""
    path = backbone_path(spec)
    trust = {"trust_remote_code": trust_remote_code}
    config = AutoConfig.from_pretrained(path, **trust)
    if init == "random":
        return AutoModelForMaskedLM.from_config(config, **attention(config), **trust), frozenset()
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the lacking weights are handled, not news
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(
            path, output_loading_info=True, **attention(config), **trust
        )
    finally:
        transformers.logging.set_verbosity(verbosity)
    missing = frozenset(info["missing_keys"])
    if head is not None:
        trained = safetensors.torch.load_file(head / HEAD_WEIGHTS)
        model.load_state_dict(trained, strict=False)
        missing -= set(trained)
    return model, missing


def attention(config: PretrainedConfig) -> dict[str, str]:
    """SDPA cannot do relative position embeddings (the demo backbone's): name the attention that
    can, rather than rely on transformers' fallback and its warning."""
    relative = getattr(config, "position_embedding_type", "absolute") != "absolute"
    return {"attn_implementation": "eager"} if relative else {}


def _check_output(output: Path) -> None:
    try:
        output.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output, prefix=".write-test-"):
            pass  # a name of its own: sweep workers and grids check one output at once
    except OSError as error:
        raise BenchError(f"output folder {output} is not writable: {error.strerror}") from None


def execute(prepared: Prepared) -> RunResult | None:
    """Trains and evaluates in an MLflow run (a new one, or the interrupted one it resumes). The
    run ends FINISHED; KILLED when interrupted (Ctrl-C, SIGTERM: a checkpoint is saved first) or
    stopped on purpose (`Stopped`); FAILED with an `error` tag on any other exception. In a
    data-parallel run, process 0 does all this and the others only train (and return None)."""
    request, plan, group = prepared.request, prepared.plan, distributed.current()
    if not group.main:
        with messages_once():
            _train_and_evaluate(prepared, Quiet())
        return None
    uri = resolve_uri(request.output, request.tracking_uri)
    tracker = Tracker(uri, prepared.suite.name, request.output / "artifacts")
    tracker.show_results(list(suites.get(request.suite).labelled_tasks))  # all, not --tasks
    params = run_params(request, prepared.suite, prepared.method_config, prepared.train)
    tags = {
        "method": request.method,
        "variant": variant(prepared.method, prepared.method_config),
        "setting": plan.setting,
        "suite": plan.suite,
        "seed": str(request.seed),
        "processes": str(group.size),
        **git_state(),
        **request.tags,
    }
    if slow := emulated_bf16(prepared.train.precision, prepared.device):
        tags[SLOW_BF16_TAG] = slow
        print(f"warning: {slow}", file=sys.stderr, flush=True)  # process 0 alone gets here
    name = tags.get("mlflow.runName") or f"{request.method}-{plan.setting}-s{request.seed}"
    try:
        with interrupts.deferred():  # a run is never created without the handling below
            if request.resume:
                where = _where(prepared.resumed.progress) if prepared.resumed else "the start"
                tracker.resume(request.resume, {"resumed": f"from {where}"})
            else:
                tracker.start(name, params, tags)
            prepared.run_id = tracker.run_id
        with messages_once():
            result = _train_and_evaluate(prepared, tracker)
    except Stopped as error:  # asked for, not a failure: the run ends where it was stopped
        tracker.tags({"stopped": str(error)[:5000]})
        tracker.end("KILLED")
        resume_checkpoints(request.output, tracker.run_id).clear()
        raise
    except (KeyboardInterrupt, SystemExit):
        if tracker.run_id:
            tracker.tags({"stopped": f"interrupted; --resume {tracker.run_id} continues it"})
            tracker.end("KILLED")
        raise
    except BaseException as error:
        if tracker.run_id:
            tracker.tags({"error": f"{type(error).__name__}: {error}"[:5000]})
            tracker.end("FAILED")
        raise
    tracker.end()
    return result


def _where(progress: dict[str, Any]) -> str:
    """Where a checkpoint's `progress` stands, in words."""
    loop, run = progress["loop"], progress["run"]
    if loop is None:
        return f"{run['model']} model(s) trained and evaluated"
    return f"model {loop['model']}, step {loop['counted']}"


def add(totals: dict[str, float], key: str, value: float) -> None:
    totals[key] = totals.get(key, 0) + value


def budget_metrics(progress: Progress) -> dict[str, float]:
    """What the run trained on: `budget/*` metrics. Stages count whether they were trained in
    this run or taken from the cache (their record is cached with them)."""
    spent, stages = progress.spent, progress.stage_spent.values()
    staged = {key: sum(record[key] for record in stages) for key in STAGE_RECORD}
    return {
        "budget/labelled_steps": spent.get("labelled_steps", 0),
        "budget/mlm_steps": spent.get("mlm_steps", 0),
        "budget/stage_steps": staged["steps"],
        "budget/labelled_tokens": spent.get("labelled_tokens", 0),
        "budget/mlm_tokens": spent.get("mlm_tokens", 0),
        "budget/stage_tokens": staged["tokens"],
        "budget/train_flops": spent.get("flops", 0) + staged["flops"],
        "budget/stage_flops": staged["flops"],
        "budget/stage_s": staged["seconds"],
    }


def labelled_stream(streams: dict[str, str]) -> str:
    """One digest of every model's labelled batches: equal digests, equal labelled batches."""
    lines = "\n".join(f"{model} {digest}" for model, digest in sorted(streams.items()))
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


def describe_checkpoint(output: Path, run_id: str) -> str:
    """Where the latest checkpoint of a run stands, for the message of an interrupted run."""
    checkpoint = resume_checkpoints(output, run_id).latest()
    return (
        "no checkpoint yet"
        if checkpoint is None
        else f"checkpoint at {_where(checkpoint.progress)}"
    )


@dataclasses.dataclass
class Progress:
    """What a run has done, carried by each checkpoint so that a resumed run adds to it."""

    model: int = 0  # how many of the plan's models are trained and evaluated
    pairs: list[dict] = dataclasses.field(default_factory=list)  # their PairResults
    selected: list[float] = dataclasses.field(default_factory=list)  # their best selection score
    tokens: int = 0
    eval_tokens: int = 0
    trainable: int = 0
    total: int = 0
    staged: dict[str, int] = dataclasses.field(default_factory=dict)  # stage -> parameters
    stages_trained: int = 0
    head_trained: bool = False  # this run trained the MLM-head stage (not read it from the cache)
    # the models' budgets: labelled and MLM steps and tokens, and train FLOPs, summed
    spent: dict[str, float] = dataclasses.field(default_factory=dict)
    streams: dict[str, str] = dataclasses.field(default_factory=dict)  # model -> Loop.stream
    stage_spent: dict[str, dict] = dataclasses.field(default_factory=dict)  # stage -> record
    # train, eval, stages, checkpoint, wall: what earlier attempts spent up to the checkpoint
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    notes: dict[str, str] = dataclasses.field(default_factory=dict)  # Model.language_notes
    oracle: list[dict] = dataclasses.field(default_factory=list)  # train.oracle's PairResults
    curves: dict[str, list] = dataclasses.field(default_factory=dict)  # model -> Loop.curve
    # train.also_selection: rule -> its models' PairResults ("pairs"), source dev scores
    # ("selected") and evaluation seconds ("eval_s"), for the run of the same training it makes
    rules: dict[str, dict] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Loop:
    """Where the training of one model stands (a checkpoint carries it), and what it has
    trained on so far."""

    model: str = ""
    step: int = 0  # optimizer steps taken
    counted: int = 0  # of them, the steps `train.budget` counts
    tokens: int = 0
    losses: list[float] = dataclasses.field(default_factory=list)  # since the last logged mean
    loss: float | None = None  # a mean training loss not logged yet
    best: float | None = None  # the best model-selection score so far
    last: float | None = None  # the latest model-selection score
    points: int = 0  # evaluation points in the running sum (train.selection=average)
    # (step, source dev score, mean target dev score or None) at each evaluation point
    curve: list[list] = dataclasses.field(default_factory=list)
    # train.oracle: "task/language" -> [its best target dev score, the step that scored it]
    oracle: dict[str, list] = dataclasses.field(default_factory=dict)
    # train.also_selection: rule -> the source dev score of its weights, once trained
    rules: dict[str, float] = dataclasses.field(default_factory=dict)
    selected: bool = True  # False: the model-selection evaluation of `step` is still to do
    # "labelled" and "mlm": steps and non-padding tokens of each kind of batch
    steps: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    kind_tokens: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    task_tokens: dict[str, int] = dataclasses.field(default_factory=dict)  # task -> tokens
    flops: dict[str, float] = dataclasses.field(default_factory=dict)  # task -> per token
    stream: str = ""  # a digest chained over the labelled batches: (pair, example ids) each

    def add(self, pair: Pair, indices: list[int], mlm: bool, tokens: int) -> None:
        """Counts one step's batch (its example ids before any data-parallel split)."""
        kind = KINDS[mlm]
        self.tokens += tokens
        self.steps[kind] += 1
        self.kind_tokens[kind] += tokens
        self.task_tokens[pair.task] = self.task_tokens.get(pair.task, 0) + tokens
        if not mlm:
            draw = f"{self.stream}|{pair}|{','.join(map(str, indices))}"
            self.stream = hashlib.sha256(draw.encode()).hexdigest()

    @property
    def train_flops(self) -> float:
        return sum(self.flops[task] * n for task, n in self.task_tokens.items())


KINDS = ("labelled", "mlm")  # indexed by "is an MLM batch"


def _train_and_evaluate(prepared: Prepared, tracker: Tracker | Quiet) -> RunResult | None:
    request, group = prepared.request, distributed.current()
    folder = checkpoint_folder(request.output, tracker.run_id)
    if group.main:
        folder.mkdir(parents=True, exist_ok=True)
    checkpoints = resume_checkpoints(request.output, tracker.run_id)
    resumed = prepared.resumed
    progress = Progress(**resumed.progress["run"]) if resumed else Progress()
    earlier = dict(progress.seconds)
    # batches (drawing and collating) and logging are the harness's part of training's time
    clocks = {
        name: Stopwatch()
        for name in ("train", "eval", "stages", "checkpoint", "batches", "logging")
    }

    def seconds() -> dict[str, float]:
        now = {name: clock.seconds for name, clock in clocks.items()}
        now["wall"] = time.perf_counter() - prepared.started
        return {name: earlier.get(name, 0.0) + value for name, value in now.items()}

    def save(loop: Loop | None = None, model: Model | None = None, state=None) -> None:
        if not group.main:
            return
        with interrupts.deferred(), clocks["checkpoint"]:
            record = {
                "run": {**dataclasses.asdict(progress), "seconds": seconds()},
                "loop": None if loop is None else dataclasses.asdict(loop),
            }
            written = checkpoints.save(record, model, state)
        tracker.tags({"checkpoint": f"{written} ({_where(record)})"})

    with clocks["stages"]:
        prepared.head, spent, trained = mlm_head(prepared, tracker)
    if spent is not None:
        progress.stage_spent[HEAD] = spent
        progress.head_trained = progress.head_trained or trained
    pending = resumed if resumed is not None and resumed.state is not None else None
    for index, model_plan in enumerate(prepared.plan.models):
        if index < progress.model:
            continue  # trained and evaluated before the run was interrupted
        with clocks["stages"]:
            folders, trained, spent = run_stages(prepared, model_plan, tracker)
        progress.stages_trained += trained
        progress.stage_spent.update(spent)  # the models of single-task share stages
        transformers.set_seed(request.seed)
        model = build_model(prepared, model_plan, folders).to(prepared.device)
        if notes := model.notes():
            tracker.tags({f"note.{key}": value for key, value in notes.items()})
        if notes := model.language_notes():
            tracker.tags({f"{LANGUAGE_NOTE}{lang}": text for lang, text in notes.items()})
            progress.notes.update(notes)
        collator = Collator(
            prepared.tokenizer, prepared.train.mlm_probability, request.seed, prepared.device
        )
        with clocks["train"]:
            path = folder / f"{model_plan.name}.safetensors"
            loop = _train(
                prepared, model_plan, model, collator, tracker, path, save, pending, clocks
            )
        pending = None
        if not group.main:
            continue  # process 0 evaluates it
        with clocks["eval"]:
            shown = request.progress and group.main
            tests = _Tests(prepared, model_plan, model, collator, path)
            for e in tqdm(model_plan.eval, desc=f"test {_named(prepared, model_plan)}",
                          unit="pair", disable=not shown):  # fmt: skip
                progress.pairs += [dataclasses.asdict(r) for r in tests(path, [e])]
                progress.eval_tokens += prepared.data[data_key(e)].tokens
            if prepared.oracle.get(model_plan.name):
                results = _oracle_test(model_plan, loop, tests, folder)
                progress.oracle += [dataclasses.asdict(r) for r in results]
            for rule, score in loop.rules.items():  # the same training, other weights
                began = time.perf_counter()
                done = progress.rules.setdefault(rule, {"pairs": [], "selected": [], "eval_s": 0})
                results = tests(rule_weights(path, rule), model_plan.eval)
                done["pairs"] += [dataclasses.asdict(r) for r in results]
                done["selected"].append(score)
                done["eval_s"] += time.perf_counter() - began
        progress.curves[model_plan.name] = loop.curve
        model_trainable, model_total = count_parameters(model)
        counts: dict[str, int] = {}
        for name, parameter in model.named_parameters():
            if stage := model.stage_of(name):
                counts[stage] = counts.get(stage, 0) + parameter.numel()
        progress.staged.update(counts)  # the models of single-task share stages: each counts once
        progress.tokens += loop.tokens
        for kind in KINDS:
            add(progress.spent, f"{kind}_steps", loop.steps[kind])
            add(progress.spent, f"{kind}_tokens", loop.kind_tokens[kind])
        add(progress.spent, "flops", loop.train_flops)
        progress.streams[model_plan.name] = loop.stream
        progress.selected.append(loop.best)
        progress.trainable += model_trainable
        progress.total += model_total
        progress.model = index + 1
        save()  # a run resumed from here goes on with the next model
    if not group.main:
        return None
    pair_results = [PairResult(**r) for r in progress.pairs]
    metrics = summarize(pair_results)
    if prepared.oracle:
        metrics.update(oracle_metrics([PairResult(**r) for r in progress.oracle], progress.curves))
    spent = seconds()
    metrics.update(
        {
            "select/score": sum(progress.selected) / len(progress.selected),
            "params/trainable": progress.trainable,
            "params/total": progress.total,
            "params/stage_trained": sum(progress.staged.values()),
            "memory/peak_rss_mb": peak_rss_mb(),
            "memory/peak_gpu_mb": peak_gpu_mb(),
            "time/train_s": spent["train"],
            "time/eval_s": spent["eval"],
            "time/stages_s": spent["stages"],
            "time/checkpoint_s": spent["checkpoint"],
            "time/batches_s": spent["batches"],
            "time/logging_s": spent["logging"],
            "time/data_s": prepared.data_s,
            "data/encoded": sum(not d.cached for d in prepared.data.values()),
            "data/cached": sum(d.cached for d in prepared.data.values()),
            **window_metrics(prepared.data),
            **head_metrics(progress),
            "stages/trained": progress.stages_trained,
            "stages/cached": sum(len(s) for s in prepared.stages.values())
            - progress.stages_trained,
            "time/wall_s": spent["wall"],
            "throughput/tokens_per_s": progress.tokens / max(spent["train"], 1e-9),
            "throughput/eval_tokens_per_s": progress.eval_tokens / max(spent["eval"], 1e-9),
            "tokens/train": progress.tokens,
            "tokens/eval": progress.eval_tokens,
            **budget_metrics(progress),
        }
    )
    tracker.metrics(metrics)
    tracker.params({STREAM_PARAM: labelled_stream(progress.streams)})
    if failed := not_learned(pair_results):
        tracker.tags({NOT_LEARNED: "; ".join(failed)[:5000]})
        print(
            f"warning: run {tracker.run_id} did not learn: its source-language test scores do "
            f"not beat the majority reference ({'; '.join(failed)})",
            file=sys.stderr,
        )
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
    for rule, done in progress.rules.items():
        same_training_run(prepared, tracker, rule, done, metrics, pair_results)
    checkpoints.clear()  # finished: nothing to resume
    spare_weights(folder)
    tracker.client.delete_tag(tracker.run_id, "checkpoint")
    return RunResult(
        tracker.run_id, tracker.experiment_id, tracker.uri, pair_results, metrics, progress.notes
    )


SAME_TRAINING = "same_training"  # the tag of a run whose weights another run's training made


def same_training_run(
    prepared: Prepared,
    tracker: Tracker,
    rule: str,
    done: dict,
    metrics: dict[str, float],
    tested: list[PairResult],
) -> str:
    """Logs `rule`'s test of the run's training (`train.also_selection`) as a run of its own:
    the params of a run asked for `rule` alone, the training's budget, times and sizes, its own
    scores and source dev score (`done`: `Progress.rules[rule]`), tag `same_training`. Takes its
    weights from the run's folder; `metrics` and `tested` are the run's own. A run resumed after
    it was logged finds it and logs no other."""
    client, own = tracker.client, tracker.run_id
    query = f"tags.{SAME_TRAINING} = '{own}' AND params.`train.selection` = '{rule}'"
    for found in client.search_runs([tracker.experiment_id], query):
        if found.info.status == "FINISHED":
            return found.info.run_id
    run = client.get_run(own)
    train = dataclasses.replace(prepared.train, selection=rule, also_selection="")
    params = {**run.data.params, **{k: param_text(v) for k, v in train.flat().items()}}
    own_tags = ("mlflow.", "checkpoint", "stopped", "resumed", NOT_LEARNED)  # its own, if any
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith(own_tags)}
    results = [PairResult(**r) for r in done["pairs"]]
    scores = summarize(results)
    main = summarize(tested)
    spent = {k: v for k, v in metrics.items() if k not in main and not k.startswith("oracle/")}
    values = {
        **spent, **scores, "time/eval_s": done["eval_s"],
        "select/score": sum(done["selected"]) / len(done["selected"]),
    }  # fmt: skip
    sibling = Tracker(tracker.uri, prepared.suite.name, prepared.request.output / "artifacts")
    name = f"{run.info.run_name}-{rule}"
    sibling.start(name, params, {**tags, SAME_TRAINING: own})
    try:
        sibling.metrics(values)
        if failed := not_learned(results):
            sibling.tags({NOT_LEARNED: "; ".join(failed)[:5000]})
        sibling.artifact(dataclasses.asdict(train) | prepared.method_config.flat(), "config.json")
        sibling.artifact(prepared.plan.to_dict(), "plan.json")
        sibling.artifact(
            {
                "run_id": sibling.run_id, "method": prepared.request.method,
                "setting": prepared.plan.setting, "suite": prepared.plan.suite,
                "seed": prepared.request.seed, "same_training": own, "metrics": values,
                "pairs": [dataclasses.asdict(r) for r in results],
            },
            "results.json",
        )  # fmt: skip
        folder = checkpoint_folder(prepared.request.output, sibling.run_id)
        folder.mkdir(parents=True, exist_ok=True)
        for model in prepared.plan.models:  # its weights, kept where a run keeps its own
            path = checkpoint_folder(prepared.request.output, own) / f"{model.name}.safetensors"
            shutil.copyfile(rule_weights(path, rule), folder / path.name)
    except BaseException as error:
        sibling.tags({"error": f"{type(error).__name__}: {error}"[:5000]})
        sibling.end("FAILED")
        raise
    sibling.end()
    return sibling.run_id


def build_model(
    prepared: Prepared, model_plan: ModelPlan, stages: dict[str, Path] | None = None
) -> Model:
    """The method's model for `model_plan`; `stages` holds the folders of its trained stages
    (`run_stages`), and is required when the method has any."""
    suite, request = prepared.suite, prepared.request
    missing = {stage.name for stage in prepared.stages[model_plan.name]} - set(stages or {})
    if missing:
        raise ValueError(f"stages {sorted(missing)} are not trained yet")
    model, untrained = load_backbone(
        suite.backbone, request.backbone_init, request.trust_remote_code, prepared.head
    )
    backbone = Backbone(
        suite.backbone, model, prepared.tokenizer, request.backbone_init, dict(stages or {}),
        untrained, functools.partial(typology.vector, suite),
    )  # fmt: skip
    names = list(model_plan.tasks) + (["mlm"] if prepared.method_config.mlm else [])
    tasks = {name: suite.task(name) for name in names}
    return prepared.method.build(backbone, model_plan, tasks, prepared.method_config)


STAGE_RECORD = ("steps", "tokens", "flops", "seconds")  # what `spent.json` holds, besides tasks
HEAD = "mlm-head"  # the stage that trains the MLM head of a backbone published without one
HEAD_WEIGHTS = "head.safetensors"
HEAD_SEED = 0  # one head serves every seed, as every method
HELD_OUT = 10  # every 10th sentence of each language's text measures the head, unseen


def mlm_head(prepared: Prepared, tracker: Tracker | Quiet) -> tuple[Path | None, dict | None, bool]:
    """The MLM-head stage: where a run trains MLM (`trains_mlm`) on a pretrained backbone that
    was published without an MLM head, the head is trained once over the frozen encoder on the
    suite's MLM text and cached, keyed by the backbone, the text and the budget; every method
    and seed then starts from it, and counts its steps as stage budget. Returns its folder and
    what it trained on (`STAGE_RECORD`, and its held-out MLM loss before and after), and
    whether it trained now; or (None, None, False) where no head is needed."""
    request, train = prepared.request, prepared.train
    needed = trains_mlm(prepared.method_config, prepared.stages) and train.head_steps > 0
    if not needed or request.backbone_init != "pretrained":
        return None, None, False
    transformers.set_seed(HEAD_SEED)  # the random head the stage starts from, if it trains
    model, untrained = load_backbone(
        prepared.suite.backbone, "pretrained", request.trust_remote_code
    )
    if not untrained:
        return None, None, False
    pairs = prepared.plan.models[0].mlm  # every language's text, in every setting
    key = {
        "stage": HEAD,
        "budget": [train.head_steps, train.head_lr, train.batch_size, HEAD_SEED, HELD_OUT],
        "loop": [train.warmup_ratio, train.max_grad_norm],
        "masking": train.mlm_probability,
        "temperature": train.temperature if len(pairs) > 1 else None,
        "sampler": SAMPLER_VERSION,
        "backbone": backbone_identity(prepared.suite.backbone),
        "data": [prepared.data[data_key(t)].fingerprint for t in pairs],
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    folder = request.output / "cache" / "stages" / f"{HEAD}-{digest}"
    trained = not folder.is_dir()
    if trained:
        _train_head(prepared, model, untrained, pairs, folder, tracker, key)
    return folder, json.loads((folder / "spent.json").read_text()), trained


def _train_head(
    prepared: Prepared,
    model: PreTrainedModel,
    untrained: frozenset[str],
    pairs: tuple[TrainPair, ...],
    folder: Path,
    tracker,
    key: dict,
) -> None:
    suite, train = prepared.suite, prepared.train
    started = time.perf_counter()
    backbone = Backbone(
        suite.backbone, model, prepared.tokenizer, "pretrained", untrained=untrained
    )
    net = MlmHeadModel(backbone, {"mlm": suite.task("mlm")}).to(prepared.device)
    fit, held = {}, {}
    for t in pairs:
        data = prepared.data[data_key(t)]
        out = [i for i in range(len(data)) if i % HELD_OUT == HELD_OUT - 1]
        fit[t.pair] = data.subset([i for i in range(len(data)) if i % HELD_OUT != HELD_OUT - 1],
                                  "head-train")  # fmt: skip
        if out:
            held[t.pair] = data.subset(out, "head-held-out")
    before = _mlm_loss(prepared, net, held)
    collator = Collator(prepared.tokenizer, train.mlm_probability, HEAD_SEED, prepared.device)
    loop = _fit(
        prepared, net, fit, collator, tracker, label=HEAD, desc=f"stage {HEAD}",
        steps=train.head_steps, lr=train.head_lr, batch_size=train.batch_size, seed=HEAD_SEED,
    )  # fmt: skip
    if distributed.current().main:
        spent = _spent(loop, started)
        spent["heldout_loss"] = {"before": before, "after": _mlm_loss(prepared, net, held)}
        weights = dict(model.named_parameters(remove_duplicate=False))
        head = {name: weights[name].detach().clone() for name in sorted(untrained)}
        _write_stage(folder, key, spent, lambda to: safetensors.torch.save_file(
            head, to / HEAD_WEIGHTS))  # fmt: skip
    distributed.current().barrier()


def _mlm_loss(prepared: Prepared, model: Model, data: dict[Pair, PairData]) -> float:
    """Mean MLM cross-entropy per masked token over `data`, masked the same way every time."""
    collator = Collator(prepared.tokenizer, prepared.train.mlm_probability, HEAD_SEED,
                        prepared.device)  # fmt: skip
    total, masked = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for pair in sorted(data):
            examples = data[pair]
            for start in range(0, len(examples), prepared.train.eval_batch_size):
                indices = list(range(start, min(start + prepared.train.eval_batch_size,
                                                len(examples))))  # fmt: skip
                batch = collator(examples.examples(indices), Kind.MLM)
                count = int((batch["labels"] != IGNORE).sum())
                total += float(model(batch, pair).loss) * count
                masked += count
    return total / max(masked, 1)


def run_stages(
    prepared: Prepared, plan: ModelPlan, tracker: Tracker | Quiet
) -> tuple[dict[str, Path], int, dict[str, dict]]:
    """Trains the stages of `plan` that are not cached yet; returns (stage name -> folder, how
    many were trained now, stage name -> what it trained on: `STAGE_RECORD`)."""
    folders, trained, spent = {}, 0, {}
    backbone = backbone_identity(prepared.suite.backbone)
    cache = prepared.request.output / "cache" / "stages"
    stages = prepared.stages[plan.name]
    keys = {stage.name: _stage_key(prepared, stage, backbone) for stage in stages}
    for stage in stages:  # a folder named by everything that changes what the stage learns
        digest = hashlib.sha256(json.dumps(keys[stage.name], sort_keys=True).encode())
        folders[stage.name] = (
            cache / f"{prepared.method.name}-{stage.name}-{digest.hexdigest()[:16]}"
        )
    missing = [stage for stage in stages if not folders[stage.name].is_dir()]
    started = time.perf_counter()
    for number, stage in enumerate(missing, 1):
        desc = f"stage {number}/{len(missing)} {stage.name}"
        _train_stage(prepared, stage, folders[stage.name], tracker, keys[stage.name], desc)
        trained += 1
        if prepared.request.progress and distributed.current().main and number < len(missing):
            each = (time.perf_counter() - started) / number
            tqdm.write(
                f"stages: {number} of {len(missing)} trained, {each:.0f} s each; "
                f"about {each * (len(missing) - number) / 60:.1f} min for the other "
                f"{len(missing) - number}"
            )
    for stage in stages:
        spent[stage.name] = json.loads((folders[stage.name] / "spent.json").read_text())
    return folders, trained, spent


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
        "sampler": SAMPLER_VERSION,
        "backbone": backbone,
        "init": request.backbone_init,
        # a random backbone is drawn with the run's seed: its stages are that seed's alone
        "backbone_seed": request.seed if request.backbone_init == "random" else None,
        "data": [prepared.data[data_key(t)].fingerprint for t in stage.pairs],
    }


SAMPLER_VERSION = 2  # bump when the draws of `PairSampler` change: cached stages train again


def _train_stage(
    prepared: Prepared,
    stage: Stage,
    folder: Path,
    tracker: Tracker | Quiet,
    key: dict[str, Any],
    desc: str,
) -> None:
    request, suite = prepared.request, prepared.suite
    started = time.perf_counter()
    transformers.set_seed(request.seed)  # the random backbone of this run, if random
    model, untrained = load_backbone(
        suite.backbone, request.backbone_init, request.trust_remote_code, prepared.head
    )
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
    loop = _fit(
        prepared, model, data, collator, tracker, label=stage.name, desc=desc, steps=stage.steps,
        lr=stage.lr, batch_size=stage.batch_size, seed=stage.seed,
    )  # fmt: skip
    group = distributed.current()
    if group.main:
        _write_stage(folder, key, _spent(loop, started), lambda to: stage.save(model, to))
    group.barrier()  # the other processes read it next


def _spent(loop: Loop, started: float) -> dict[str, Any]:
    """What a stage trained on (`STAGE_RECORD`, and its tokens per task), for `spent.json`."""
    return {
        "steps": loop.step,
        "tokens": loop.tokens,
        "flops": loop.train_flops,
        "seconds": time.perf_counter() - started,
        "tasks": loop.task_tokens,
    }


def _write_stage(
    folder: Path, key: dict[str, Any], spent: dict[str, Any], save: Callable[[Path], None]
) -> None:
    """A trained stage's folder: what `save` writes, its key and its record. Written under a
    temporary name, then renamed: a crash mid-save never leaves a folder that looks complete."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save(partial)
    (partial / "stage.json").write_text(json.dumps(key, indent=2, sort_keys=True) + "\n")
    (partial / "spent.json").write_text(json.dumps(spent, indent=2) + "\n")
    partial.rename(folder)


def _train(
    prepared: Prepared,
    plan: ModelPlan,
    model: Model,
    collator: Collator,
    tracker: Tracker | Quiet,
    path: Path,
    save: Callable[..., None],
    resumed: Checkpoint | None,
    clocks: dict[str, Stopwatch],
) -> Loop:
    """Trains `model` in place, leaves it at its best model-selection checkpoint (`path`), and
    returns its loop: what it trained on and the best model-selection score (None outside
    process 0 of a data-parallel run, which selects for all). `save(loop, model, state)` writes
    a checkpoint; `resumed` is the one to continue from."""
    main = distributed.current().main
    pairs = [*plan.train, *(plan.mlm if prepared.method_config.mlm else ())]
    rule, oracle = prepared.train.selection, prepared.oracle.get(plan.name, ())
    rules = (rule, *prepared.train.also_rules)

    def weights(name: str) -> Path:  # where a rule's weights go: the run's own at `path`
        return path if name == rule else rule_weights(path, name)

    average = Average(path.parent, plan.name)
    loop = Loop(plan.name)
    if resumed is not None:
        loop = Loop(**resumed.progress["loop"])
        model.load(str(resumed.weights))

    def select(step: int) -> None:
        last = step == prepared.train.max_steps and plan is prepared.plan.models[-1]
        # a sweep's pruner reads the source dev score of the weights in training, whatever the
        # rule; its objective is the run's select/score
        score = _select(prepared, plan, model, collator, tracker, step, last)
        target = (
            _oracle_point(prepared, plan, model, collator, tracker, step, loop) if oracle else None
        )
        with interrupts.deferred():  # the weights kept and the loop's record change together
            if "average" in rules:
                loop.points = average.add(model, loop.points)
            if loop.best is None or score > loop.best:
                if "source-dev" in rules:
                    _save(model, weights("source-dev"))
                loop.best = score
            loop.last = score
            loop.curve.append([step, score, target])

    _fit(
        prepared, model, {t.pair: prepared.data[data_key(t)] for t in pairs}, collator,
        tracker, label=plan.name, desc=f"train {_named(prepared, plan)}",
        steps=prepared.train.max_steps, lr=prepared.method_config.lr,
        batch_size=prepared.train.batch_size, seed=prepared.request.seed,
        select=select if main else None,
        loop=loop, state=resumed.state if resumed else None,
        checkpoint=lambda state: save(loop, model, state), clocks=clocks,
    )  # fmt: skip
    if not main:
        return loop
    scores = {"source-dev": loop.best}
    if "last" in rules:  # the model holds the last weights now
        _save(model, weights("last"))
        scores["last"] = loop.last
    if "average" in rules:  # its own source dev score is its selection score
        average.apply(model, loop.points)
        _save(model, weights("average"))
        logged = tracker if rule == "average" else Quiet()
        scores["average"] = _select(prepared, plan, model, collator, logged, None, False)
    model.load(str(path))
    loop.best = scores[rule]
    loop.rules = {name: scores[name] for name in rules[1:]}
    return loop


def rule_weights(path: Path, rule: str) -> Path:
    """Where a run keeps a model's weights under another selection rule (`also_selection`)
    until the run of that rule takes them."""
    return path.with_name(f"{path.stem}.rule-{rule}{path.suffix}")


def _save(model: Model, path: Path) -> None:
    """The model's trainable weights to `path`, whole or not at all."""
    partial = path.with_name(path.name + ".partial")
    model.save(str(partial))
    os.replace(partial, path)


def _oracle_point(
    prepared: Prepared,
    plan: ModelPlan,
    model: Model,
    collator: Collator,
    tracker: Tracker,
    step: int,
    loop: Loop,
) -> float:
    """Scores the target dev splits (train.oracle) at an evaluation point, logged under
    `oracle/dev/`; keeps the weights of every step that is still some pair's best (the oracle's
    test scores need them) and returns the mean target dev score."""
    scores = {}
    for e in prepared.oracle[plan.name]:
        data = prepared.data[data_key(e)]
        task = prepared.suite.task(e.pair.task)
        result = evaluate(model, task, data, e, None, prepared.train, plan.name, collator)
        scores[str(e.pair)] = result.score
        tracker.metrics({f"oracle/dev/{e.pair}/{result.metric}": result.score}, step)
    folder = checkpoint_folder(prepared.request.output, tracker.run_id)
    with interrupts.deferred():
        for pair, score in scores.items():
            if pair not in loop.oracle or score > loop.oracle[pair][0]:
                loop.oracle[pair] = [score, step]
        if step in {s for _, s in loop.oracle.values()}:
            _save(model, _oracle_weights(folder, plan.name, step))
        kept = {_oracle_weights(folder, plan.name, s) for _, s in loop.oracle.values()}
        for old in folder.glob(f"{plan.name}.oracle-*.safetensors"):
            if old not in kept:
                old.unlink()
    return sum(scores.values()) / len(scores)


def _oracle_test(plan: ModelPlan, loop: Loop, tests: _Tests, folder: Path) -> list[PairResult]:
    """The oracle's test scores: each target pair with a dev split, evaluated on its test split
    with the weights of the checkpoint its dev split scored best."""
    by_step: dict[int, list[EvalPair]] = {}
    for e in plan.eval:
        if str(e.pair) in loop.oracle:
            by_step.setdefault(loop.oracle[str(e.pair)][1], []).append(e)
    return [
        result
        for step, pairs in sorted(by_step.items())
        for result in tests(_oracle_weights(folder, plan.name, step), pairs)
    ]


class _Tests:
    """A model's test scores under the weights in a file, by the file's content: weights that
    two rules kept from the same step (source dev picked the last checkpoint, or the oracle's
    step) are evaluated once, and give the same scores as evaluating them again would.
    `current`: the file whose weights the model holds now."""

    def __init__(
        self, prepared: Prepared, plan: ModelPlan, model: Model, collator: Collator, current: Path
    ) -> None:
        self.prepared, self.plan, self.model, self.collator = prepared, plan, model, collator
        self.digests = {current: sha256(current)}  # each file read once: none changes here
        self.loaded = self.digests[current]
        self.done: dict[str, dict[str, PairResult]] = {}  # weights digest -> pair -> result

    def __call__(self, weights: Path, pairs: list[EvalPair]) -> list[PairResult]:
        if weights not in self.digests:
            self.digests[weights] = sha256(weights)
        digest = self.digests[weights]
        known = self.done.setdefault(digest, {})
        for e in pairs:
            if str(e.pair) in known:
                continue
            if digest != self.loaded:
                self.model.load(str(weights))
                self.loaded = digest
            data = self.prepared.data[data_key(e)]
            refs = self.prepared.references[(self.plan.name, e.pair.task)]
            task = self.prepared.suite.task(e.pair.task)
            known[str(e.pair)] = evaluate(
                self.model, task, data, e, refs, self.prepared.train, self.plan.name, self.collator
            )
        return [known[str(e.pair)] for e in pairs]


def oracle_metrics(results: list[PairResult], curves: dict[str, list]) -> dict[str, float]:
    """The oracle's test scores under `oracle/` (never `eval/`), how many targets it covers
    per task, and each model's `curve_metrics`."""
    metrics = {
        "oracle/" + key.partition("/")[2]: value
        for key, value in summarize(results).items()
        if key.startswith("eval/")
    }
    for task in {r.task for r in results}:
        metrics[f"oracle/{task}/targets"] = sum(r.task == task for r in results)
    for name, curve in curves.items():
        metrics.update(curve_metrics(name, curve))
    return metrics


def _oracle_weights(folder: Path, name: str, step: int) -> Path:
    return folder / f"{name}.oracle-{step}.safetensors"


def _named(prepared: Prepared, plan: ModelPlan) -> str:
    """A model as bars name it: the setting for the one model of most settings (`mixed`), its
    name and number where a setting trains several (`ner (2/3)` in single-task)."""
    models = prepared.plan.models
    if len(models) == 1:
        return prepared.plan.setting
    return f"{plan.name} ({models.index(plan) + 1}/{len(models)})"


def _fit(
    prepared: Prepared,
    model: Model,
    data: dict[Pair, PairData],
    collator: Collator,
    tracker: Tracker | Quiet,
    *,
    label: str,
    desc: str,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    select: Callable[[int], None] | None = None,
    loop: Loop | None = None,
    state: dict[str, Any] | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    clocks: dict[str, Stopwatch] | None = None,
) -> Loop:
    """The training loop: pairs from `PairSampler`'s labelled and MLM streams, `steps` counted
    as `train.budget` says, AdamW with linear warm-up and decay over every step, clipping, a NaN
    guard; `select(step)` every `train.eval_every` counted steps, each followed by
    `checkpoint(training state)`, as is an interrupt. `loop` and `state` (from a checkpoint)
    continue where an earlier attempt stopped; `clocks["batches"]` and `clocks["logging"]` add up
    the harness's share of the steps. In a data-parallel run every process takes every step on
    its share of the batch (`distributed`). Returns the loop, with what it trained on."""
    cfg, group = prepared.train, distributed.current()
    network = group.wrap(model)
    clocks = clocks or {"batches": Stopwatch(), "logging": Stopwatch()}
    kinds = {pair: d.kind for pair, d in data.items()}
    parameters = model.trainable_parameters()
    optimizer = make_optimizer(parameters, lr, prepared.method_config.weight_decay)
    sampler = PairSampler(data, batch_size, cfg.temperature, seed, steps=steps, budget=cfg.budget)
    total = len(sampler.schedule)
    scheduler = transformers.get_linear_schedule_with_warmup(
        optimizer, int(cfg.warmup_ratio * total), total
    )
    draws = iter(sampler)
    loop = loop or Loop(label)
    if state is not None:
        restore(state, optimizer, scheduler, sampler, collator)

    def save() -> None:
        if checkpoint is not None:
            checkpoint(training_state(optimizer, scheduler, sampler, collator))

    def counted(step: int) -> int:  # the budget's count after optimizer step `step`
        return sampler.counted[step - 1] if step else 0

    def log(step: int) -> None:
        with clocks["logging"]:
            tracker.metrics({f"train/{label}/loss": loop.loss}, counted(step))
            bar.set_postfix(loss=f"{loop.loss:.3f}")
        loop.loss = None

    bar = tqdm(
        range(loop.step + 1, total + 1), desc=desc, initial=loop.step, total=total,
        disable=not prepared.request.progress or not group.main,
    )  # fmt: skip
    try:
        if loop.loss is not None:  # the interrupted attempt computed it but did not log it
            log(loop.step)
        if not loop.selected:  # it was interrupted in this step's model selection
            select(counted(loop.step))
            loop.selected = True
            save()
        for step in bar:
            with interrupts.deferred():  # a step is taken whole or not at all
                with clocks["batches"]:
                    pair, indices = next(draws)
                    share, weight = group.shard(indices)
                    batch = collator(data[pair].examples(share), kinds[pair])
                model.train()
                with autocast(cfg.precision, prepared.device):
                    loss = network(batch, pair).loss
                mean, tokens = group.reduce(loss, weight, int(batch["attention_mask"].sum()))
                if not math.isfinite(mean):  # in every process alike: the mean is shared
                    raise TrainingError(f"non-finite loss {mean} at step {step} on pair {pair}")
                (loss * weight if group.size > 1 else loss).backward()
                torch.nn.utils.clip_grad_norm_(parameters, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                loop.step, loop.counted = step, counted(step)
                loop.add(pair, indices, kinds[pair] is Kind.MLM, tokens)
                loop.losses.append(mean)
                if step % 10 == 0:  # the bar's loss: the mean since the last logged one
                    bar.set_postfix(
                        loss=f"{sum(loop.losses) / len(loop.losses):.3f}", refresh=False
                    )
                moved = counted(step) > counted(step - 1)  # a step the budget counts
                if (moved and counted(step) % 50 == 0) or step == total:
                    loop.loss, loop.losses = sum(loop.losses) / len(loop.losses), []
                due = moved and counted(step) % cfg.eval_every == 0
                loop.selected = select is None or not (due or step == total)
            if loop.loss is not None:
                log(step)
            if not loop.selected:
                select(counted(step))
                loop.selected = True
                save()
    except (KeyboardInterrupt, SystemExit):  # SystemExit: a job scheduler's handler (submitit)
        save()  # where the last whole step left it
        raise
    finally:
        group.release()
    if group.main:  # after training, which it leaves as it was
        loop.flops = measure_flops(prepared, model, data, batch_size, seed)
    return loop


def measure_flops(
    prepared: Prepared, model: Model, data: dict[Pair, PairData], batch_size: int, seed: int
) -> dict[str, float]:
    """Per task: the FLOPs of one training step (forward and backward, as PyTorch's
    `FlopCounterMode` counts them) per non-padding token, on a batch of the task's first pair
    (masked from `seed`: an MLM head's FLOPs depend on how many tokens are masked). Training is
    left as it was: the step's random draws are forked off, its gradients dropped, and no
    optimizer step is taken."""
    collator = Collator(prepared.tokenizer, prepared.train.mlm_probability, seed, prepared.device)
    cuda = [prepared.device] if prepared.device.type == "cuda" else []
    flops: dict[str, float] = {}
    for pair in sorted(data):
        if pair.task in flops:
            continue
        examples = data[pair].examples(list(range(min(batch_size, len(data[pair])))))
        model.train()
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)  # the same masks whatever training drew before
            batch = collator(examples, data[pair].kind)
            with FlopCounterMode(display=False) as counter:
                with autocast(prepared.train.precision, prepared.device):
                    loss = model(batch, pair).loss
                loss.backward()
        model.zero_grad(set_to_none=True)
        flops[pair.task] = counter.get_total_flops() / int(batch["attention_mask"].sum())
    return flops


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
    step: int | None,
    last: bool,
) -> float:
    """Scores the model-selection pairs; their mean primary metric picks the best checkpoint.
    `step` None: the averaged weights (train.selection=average), logged apart, after training."""
    scores = {}
    for e in plan.selection:
        data = prepared.data[data_key(e)]
        task = prepared.suite.task(e.pair.task)
        result = evaluate(model, task, data, e, None, prepared.train, plan.name, collator)
        scores[f"select/{e.pair.task}/{e.pair.language}/{result.metric}"] = result.score
    mean = sum(scores.values()) / len(scores)
    if step is None:
        tracker.metrics({f"select/{plan.name}/average_score": mean})
        return mean
    tracker.metrics({**scores, f"select/{plan.name}/score": mean}, step)
    if prepared.request.on_select is not None:
        prepared.request.on_select(mean, last)
    return mean
