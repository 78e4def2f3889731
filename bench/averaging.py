"""Run averaging (Schmidt et al., ACL 2023): the weights a method's seeds kept, one configuration,
averaged into one model and tested as an MLflow run of its own (`bench compare --run-average`).

Each seed's run keeps the trainable weights of every model it tested beside its checkpoints
(`<output>/checkpoints/<run id>/<model>.safetensors`); the frozen weights come from the backbone
and from stages shared by every seed (MAD-X's language adapters). The averaged run logs the
zero-shot scores of the averaged model, its runs' ids (tag `run_average`), the seeds they had
(param `seed`, `0+1+2`) and, as its budget, the sum of theirs: it cost their training. It keeps
the averaged weights where a run keeps its own. Reports name it `<method> [run average]`.
"""

from __future__ import annotations

import dataclasses

import transformers
from mlflow import MlflowClient
from safetensors.torch import load_file

from bench import runner
from bench.data import Collator
from bench.errors import BenchError
from bench.evaluation import evaluate, not_learned, summarize
from bench.method import variant
from bench.model import count_parameters
from bench.selection import trainable_state
from bench.tracking import NOT_LEARNED, STREAM_PARAM, Tracker, git_state, resolve_uri

TAG = "run_average"  # the averaged runs' ids, comma-separated
SUMMED = ("budget/", "time/train_s", "time/stages_s", "tokens/train")  # what the seeds spent


def average_runs(request: runner.Request, run_ids: list[str]) -> runner.RunResult:
    """Averages the kept weights of `run_ids` (finished runs of `request`'s configuration, one
    per seed) and tests the average on the request's test pairs, in a new MLflow run."""
    if len(run_ids) < 2:
        raise BenchError(f"run averaging needs two runs or more, not {len(run_ids)}")
    prepared = runner.prepare(request)
    uri = resolve_uri(request.output, request.tracking_uri)
    client = MlflowClient(uri)
    runs = [client.get_run(run_id) for run_id in run_ids]
    seeds = [run.data.params.get("seed", "?") for run in runs]
    for run in runs:
        if run.info.status != "FINISHED":
            raise BenchError(f"run {run.info.run_id} is {run.info.status}, not FINISHED")
    tracker = Tracker(uri, prepared.suite.name, request.output / "artifacts")
    params = runner.run_params(request, prepared.suite, prepared.method_config, prepared.train)
    tags = {
        "method": request.method,
        "variant": variant(prepared.method, prepared.method_config),
        "setting": prepared.plan.setting,
        "suite": prepared.plan.suite,
        "seed": "+".join(seeds),
        TAG: ",".join(run_ids),
        **git_state(),
        **request.tags,
    }
    name = f"{request.method}-{prepared.plan.setting}-run-average"
    tracker.start(name, {**params, "seed": "+".join(seeds)}, tags)
    try:
        results, trainable, total = _evaluate(prepared, tracker, run_ids)
        metrics = summarize(results)
        spent = [run.data.metrics for run in runs]
        for key in {k for m in spent for k in m if k.startswith(SUMMED)}:
            metrics[key] = sum(m.get(key, 0.0) for m in spent)
        metrics.update({"params/trainable": trainable, "params/total": total})
        for key in ("params/stage_trained", "memory/peak_rss_mb"):
            metrics[key] = max(m.get(key, 0.0) for m in spent)
        tracker.metrics(metrics)
        if failed := not_learned(results):
            tracker.tags({NOT_LEARNED: "; ".join(failed)[:5000]})
        streams = [run.data.params.get(STREAM_PARAM, "") for run in runs]
        tracker.params({STREAM_PARAM: "+".join(streams)})
        tracker.artifact(prepared.plan.to_dict(), "plan.json")
        tracker.artifact(
            {
                "run_id": tracker.run_id,
                "method": request.method,
                "setting": prepared.plan.setting,
                "suite": prepared.plan.suite,
                "seed": "+".join(seeds),
                "averaged": run_ids,
                "metrics": metrics,
                "pairs": [dataclasses.asdict(r) for r in results],
            },
            "results.json",
        )
    except BaseException as error:
        tracker.tags({"error": f"{type(error).__name__}: {error}"[:5000]})
        tracker.end("FAILED")
        raise
    tracker.end()
    return runner.RunResult(
        tracker.run_id, tracker.experiment_id, tracker.uri, results, metrics, {}
    )


def _evaluate(prepared: runner.Prepared, tracker: Tracker, run_ids: list[str]):
    results, trainable, total = [], 0, 0
    # the MLM head a headless backbone's runs started from (and froze): read from the cache
    prepared.head, _, _ = runner.mlm_head(prepared, tracker)
    for model_plan in prepared.plan.models:
        folders, _, _ = runner.run_stages(prepared, model_plan, tracker)
        transformers.set_seed(prepared.request.seed)
        model = runner.build_model(prepared, model_plan, folders).to(prepared.device)
        own = trainable_state(model)
        states = []
        for run_id in run_ids:
            path = runner.checkpoint_folder(prepared.request.output, run_id)
            path = path / f"{model_plan.name}.safetensors"
            if not path.exists():
                raise BenchError(
                    f"run {run_id} kept no weights at {path}: run averaging reads the weights "
                    "each run kept in the --output it ran with"
                )
            states.append(load_file(str(path)))
        if any(state.keys() != own.keys() for state in states):
            raise BenchError(f"the runs {', '.join(run_ids)} kept different weights")
        averaged = {
            key: (sum(state[key].double() for state in states) / len(states)).to(value.dtype)
            for key, value in own.items()
        }
        model.load_state_dict(averaged, strict=False)
        folder = runner.checkpoint_folder(prepared.request.output, tracker.run_id)
        folder.mkdir(parents=True, exist_ok=True)
        model.save(str(folder / f"{model_plan.name}.safetensors"))  # kept, as a run keeps its own
        collator = Collator(
            prepared.tokenizer, prepared.train.mlm_probability, prepared.request.seed,
            prepared.device,
        )  # fmt: skip
        for e in model_plan.eval:
            data = prepared.data[runner.data_key(e)]
            refs = prepared.references[(model_plan.name, e.pair.task)]
            task = prepared.suite.task(e.pair.task)
            results.append(
                evaluate(model, task, data, e, refs, prepared.train, model_plan.name, collator)
            )
        model_trainable, model_total = count_parameters(model)
        trainable += model_trainable
        total += model_total
    return results, trainable, total
