"""`python -m bench`: run, sweep, plan, list, compare, report, ui, params, perf, and more."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
from pathlib import Path

from bench.errors import BenchError, TrainingError

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, as for every other bad input
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--suite", default="demo", help="suite name or suite file suite.toml (default: demo)"
    )
    parser.add_argument(
        "--setting", default="mixed", help="single-task, multi-task, mixed, few-shot"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--shots", type=int, help="few-shot: labelled examples per target pair")
    parser.add_argument("--tasks", help="only these labelled tasks, comma-separated (default: all)")


def _runs(parser: argparse.ArgumentParser) -> None:
    """What `run` and `sweep` share: the run's method, suite, setting, budget and store."""
    parser.add_argument("--method", required=True, help="method name (see `list`)")
    _common(parser)
    parser.add_argument(
        "--output", type=Path, default=Path("bench-runs"), help="MLflow store, caches, checkpoints"
    )
    parser.add_argument("--max-steps", type=int, help="override the suite's training steps")
    parser.add_argument("--eval-every", type=int, help="override the steps between evaluations")
    _budget(parser)
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite in --output)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="any option, e.g. method.weight_decay=0.01 or train.batch_size=16 (`list --options`)",
    )  # fmt: skip
    parser.add_argument(
        "--precision", choices=("fp32", "bf16"),
        help="bf16: bfloat16 autocast in training and evaluation (train.precision)",
    )  # fmt: skip
    parser.add_argument(
        "--trust-remote-code", action="store_true",
        help="let a backbone that ships its own modelling code (auto_map) run it",
    )  # fmt: skip
    _plugin(parser)


def _plugin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plugin", action="append", type=Path, default=[], metavar="FILE.py",
        help="load a module that registers methods (repeatable)",
    )  # fmt: skip


def _budget(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--budget", choices=("labelled", "total"),
        help="what --max-steps counts: labelled batches (default; MLM batches on top) or every "
        "batch (train.budget)",
    )  # fmt: skip
    parser.add_argument(
        "--selection", metavar="RULE[,RULE...]",
        help="the weights evaluated: source-dev, the best on source dev (default), last, or "
        "average, over evaluation points (train.selection); more rules, comma-separated, also "
        "test the same training, each logged as a run of its own (train.also_selection)",
    )  # fmt: skip
    parser.add_argument(
        "--oracle", action="store_true",
        help="also log, under oracle/, test scores of checkpoints picked on target dev data: an "
        "upper bound, not zero-shot (train.oracle)",
    )  # fmt: skip


def _launchers(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--launcher", choices=("local", "slurm"), default="local",
        help=f"where the {what} execute: here (default) or as Slurm jobs through submitit",
    )  # fmt: skip
    parser.add_argument(
        "--slurm", action="append", default=[], metavar="KEY=VALUE",
        help="a submitit parameter of the Slurm jobs: partition=gpu, gpus_per_node=1, "
        "cpus_per_task=8, mem_gb=32, timeout_min=600, account=..., qos=... (repeatable)",
    )  # fmt: skip


def _launch_options(args: argparse.Namespace, storage: str | None = None) -> dict:
    """The launcher flags, checked before anything runs: no --slurm without the Slurm launcher,
    its keys known, its commands on the PATH, and stores every job can reach."""
    from bench import launch

    if args.launcher != "slurm":
        if args.slurm:
            raise BenchError("--slurm sets the Slurm jobs' parameters: add --launcher slurm")
        return {}
    options = launch.slurm_options(args.slurm)
    from bench.tracking import resolve_uri

    launch.check_shared(resolve_uri(args.output, args.tracking_uri), storage)
    launch.check_slurm()
    return options


def _selection(args: argparse.Namespace, train: dict) -> None:
    """`--selection` and `--oracle` into the train options."""
    if args.selection is not None:
        train["selection"], _, train["also_selection"] = args.selection.partition(",")
    if args.oracle:
        train["oracle"] = True


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="train and evaluate one method on a suite and setting")
    _runs(run)
    run.add_argument("--lr", type=float, help="learning rate (method.lr)")
    run.add_argument(
        "--backbone-init", default="pretrained", help="pretrained, or random (an untrained control)"
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--resume", metavar="RUN_ID",
        help="continue this interrupted run from its last checkpoint (same flags as it started)",
    )  # fmt: skip
    run.add_argument(
        "--processes", type=int, default=1, metavar="N",
        help="train data-parallel in N processes (one per GPU; CPU processes without GPUs), "
        "through accelerate launch (default: 1)",
    )  # fmt: skip

    sweep = commands.add_parser(
        "sweep", help="an Optuna study of runs over a method's search space (one MLflow parent)"
    )
    _runs(sweep)
    sweep.add_argument(
        "--trials", type=int, default=20,
        help="finished trials (complete or pruned) the study should hold (default: 20)",
    )  # fmt: skip
    sweep.add_argument(
        "--study", help="study name (default: <suite>-<method>-<setting>); an existing one resumes"
    )
    sweep.add_argument(
        "--storage",
        help="Optuna storage URL (default: sqlite:///<output>/optuna.db; "
        "postgresql://user:password@host/db, or journal:/shared/study.log, for workers on "
        "several machines)",
    )
    sweep.add_argument(
        "--workers", type=int, default=1,
        help="worker processes on this machine, or Slurm jobs with --launcher slurm (default: 1)",
    )  # fmt: skip
    _launchers(sweep, "workers")
    sweep.add_argument(
        "--space", action="append", default=[], metavar="KEY=SPEC",
        help="search KEY over float:LOW:HIGH[:log], int:LOW:HIGH[:log] or choice:A,B "
        "(adds to or replaces the method's space; --set fixes a key instead)",
    )  # fmt: skip
    sweep.add_argument("--no-prune", action="store_true", help="let every trial finish")

    plan = commands.add_parser("plan", help="print the Plan of a suite and setting")
    _common(plan)
    plan.add_argument("--json", action="store_true", help="print the Plan as JSON")
    plan.add_argument(
        "--set", action="append", default=[], metavar="train.KEY=VALUE",
        help="a train option, as a run would set it (train.deduplicate=false, train.oracle=true)",
    )  # fmt: skip

    listing = commands.add_parser("list", help="methods, tasks, settings and suites")
    listing.add_argument("--options", action="store_true", help="also list every option")
    listing.add_argument(
        "--suite", help="with --options: the values this suite sets (name or suite file)"
    )
    listing.add_argument("--method", help="with --options: only this method's options")
    _plugin(listing)

    languages = commands.add_parser(
        "languages", help="languages: their names, typological vectors and data in a suite"
    )
    languages.add_argument("codes", nargs="+", metavar="CODE", help="ISO 639-1 or 639-3 codes")
    languages.add_argument(
        "--suite", default="demo", help="the suite whose data is listed (default: demo)"
    )

    backbone = commands.add_parser("backbone", help="build or check the demo backbone")
    actions = backbone.add_subparsers(dest="action", required=True, parser_class=_Parser)
    build = actions.add_parser("build", help="pretrain the demo backbone (minutes; done once)")
    build.add_argument("name", choices=["demo"])
    build.add_argument("--steps", type=int, default=None, help="MLM pretraining steps")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--output", type=Path, default=None, help="folder (default: backbones/demo)")
    actions.add_parser("check", help="verify the shipped demo backbone's checksum")

    data = commands.add_parser("data", help="inspect local data files")
    data_actions = data.add_subparsers(dest="action", required=True, parser_class=_Parser)
    check = data_actions.add_parser(
        "check", help="parse a file; print its counts, labels and problems (exit 2 if malformed)"
    )
    check.add_argument("path", type=Path, help="a CoNLL-U, two-column CoNLL, TSV or text file")
    check.add_argument(
        "--task", required=True, help="pos, ner (CoNLL-U by the .conllu suffix), nli or mlm"
    )

    params = commands.add_parser(
        "params", help="trainable and total parameters of a method on a backbone's shape"
    )
    params.add_argument(
        "--method", required=True,
        help="method name (see `list`), or several, comma-separated; METHOD:KEY=VALUE sets its "
        "options (hyperx:language_source=typology)",
    )  # fmt: skip
    params.add_argument(
        "--backbone-shape", default="mbert-base",
        help="mbert-base (default), demo, or a model folder (only its config.json is read)",
    )  # fmt: skip
    params.add_argument(
        "--languages", default="17", help="languages, or several counts: 10,50 (default: 17)"
    )
    params.add_argument("--tasks", type=int, default=2, help="labelled tasks, 1-3 (default: 2)")
    params.add_argument(
        "--report", type=Path, default=None,
        help="with several methods or counts, the table is written here "
        "(default: reports/params-<shape>.md)",
    )  # fmt: skip
    _plugin(params)

    compare = commands.add_parser(
        "compare", help="methods x settings x seeds on a suite, one table under reports/"
    )
    compare.add_argument(
        "--methods", required=True,
        help="comma-separated methods, each METHOD or METHOD:KEY=VALUE[:KEY=VALUE] with its own "
        "options (adapter:mlm=true: the shared adapter with Hyper-X's MLM)",
    )  # fmt: skip
    compare.add_argument("--settings", default="mixed", help="comma-separated (default: mixed)")
    compare.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default: 3)")
    compare.add_argument(
        "--suite", default="demo", help="suite name or suite file suite.toml (default: demo)"
    )
    compare.add_argument("--max-steps", type=int, help="override the suite's training steps")
    compare.add_argument(
        "--budgets", metavar="STEPS,...",
        help="learning curves: the grid at each of these step counts (e.g. 200,400,800,1600), "
        "plotted against labelled steps and FLOPs: reports/<suite>/curves.md",
    )  # fmt: skip
    _budget(compare)
    compare.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="an option for every method's runs (train.* or method.*; `list --options`)",
    )  # fmt: skip
    compare.add_argument(
        "--tune", type=int, metavar="N",
        help="first tune every method with an N-trial Optuna study (same seed, budget and "
        "source-dev selection), then run the grid with each one's best values",
    )  # fmt: skip
    compare.add_argument(
        "--tune-setting",
        help="the setting the studies tune on (default: mixed if in --settings, else the first)",
    )
    compare.add_argument("--output", type=Path, default=Path("bench-runs"))
    compare.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: sqlite in --output; with --launcher "
        "slurm, a server or database every job reaches)",
    )  # fmt: skip
    _launchers(compare, "grid runs")
    compare.add_argument(
        "--parallel", type=int, default=1, metavar="K",
        help="local grid runs at once, each in its own process (with GPUs, each on its own)",
    )  # fmt: skip
    compare.add_argument(
        "--run-average", action="store_true",
        help="also test, per method and setting, the average of its seeds' weights (Schmidt et "
        "al. 2023): one more run each, reported as `METHOD [run average]`",
    )  # fmt: skip
    compare.add_argument(
        "--reuse", action="store_true",
        help="reuse finished runs in the store with exactly the params a grid run would log",
    )  # fmt: skip
    _plugin(compare)
    compare.add_argument(
        "--report",
        type=Path,
        help="where to write (default: ./reports/<suite>/compare-<settings>.md)",
    )

    report = commands.add_parser(
        "report", help="the runs of one suite and setting in the store, compared with bootstrap CIs"
    )
    report.add_argument(
        "--suite", default="demo", help="suite name or suite file suite.toml (default: demo)"
    )
    report.add_argument("--setting", default="mixed", help="the runs' setting (default: mixed)")
    report.add_argument("--output", type=Path, default=Path("bench-runs"), help="the runs' folder")
    report.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite in --output)")
    report.add_argument(
        "--baseline", default="hyperx", help="the method others are paired with (default: hyperx)"
    )
    report.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap replicates (default: 1000)"
    )
    report.add_argument(
        "--filter", help="an MLflow search filter the runs must also match, "
        "e.g. 'params.`train.max_steps` = \"400\"'",
    )  # fmt: skip
    report.add_argument(
        "--report", type=Path,
        help="where to write (default: reports/<suite>/<setting>.md; the plots beside it)",
    )  # fmt: skip

    perf = commands.add_parser(
        "perf", help="step times, throughput, memory, overhead of every method: reports/perf.md"
    )
    perf.add_argument("--repeats", type=int, default=3, help="timed steps per case (default: 3)")
    perf.add_argument("--threads", type=int, default=2, help="CPU threads (default: 2)")
    perf.add_argument("--quick", action="store_true", help="skip the paper's 32 x 256 batch")
    perf.add_argument(
        "--startup", action="store_true",
        help="only time how fast the CLI answers (bench list, bad names) in fresh processes: "
        "reports/startup.md",
    )  # fmt: skip
    perf.add_argument(
        "--report", type=Path,
        help="where to write (default: reports/perf.md; reports/startup.md with --startup; "
        "reports/<suite>/precision.md with --precision)",
    )  # fmt: skip
    perf.add_argument(
        "--methods",
        help="methods timed and run (default: the README's six; none: skip them); with "
        "--precision, the one method timed (default: hyperx)",
    )
    perf.add_argument(
        "--method-steps", type=int, default=200, help="training steps per method run (default: 200)"
    )
    perf.add_argument(
        "--preprocessing", metavar="SUITE",
        help="also time a suite's data preparation, encoding and cached (e.g. suites/shared.toml)",
    )  # fmt: skip
    perf.add_argument(
        "--precision", metavar="SUITE",
        help="only time bf16 against fp32 on a suite's backbone (training steps and every test "
        "set whole) and count their agreeing predictions: reports/<suite>/precision.md",
    )  # fmt: skip
    perf.add_argument(
        "--precision-steps", type=int, default=20,
        help="timed training steps per precision with --precision (default: 20)",
    )  # fmt: skip

    transfer = commands.add_parser(
        "transfer", help="pretrained vs random backbone on zero-shot POS: reports/demo/transfer.md"
    )
    transfer.add_argument("--seeds", type=int, default=3, help="seeds per backbone (default: 3)")
    transfer.add_argument("--max-steps", type=int, help="override the suite's training steps")
    transfer.add_argument("--output", type=Path, default=Path("bench-runs"))
    transfer.add_argument("--report", type=Path, help="where to write (default: reports/demo/)")

    export = commands.add_parser(
        "export", help="a suite's finished runs and tuning studies as files (default: "
        "results/<suite>/), to commit, or to carry to another store with `bench import`",
    )  # fmt: skip
    export.add_argument(
        "--suite", default="demo", help="suite name or suite file suite.toml (default: demo)"
    )
    _store_flags(export)
    export.add_argument("--to", type=Path, help="the folder (default: results/<suite>)")
    load = commands.add_parser(
        "import", help="add the runs and studies of a `bench export` folder to a store"
    )
    load.add_argument("folder", type=Path, help="a folder `bench export` wrote")
    _store_flags(load)

    ui = commands.add_parser(
        "ui", help="the MLflow UI over the runs of --output (an `mlflow server`, Ctrl-C stops it)"
    )
    ui.add_argument("--output", type=Path, default=Path("bench-runs"), help="the runs' folder")
    ui.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite in --output)")
    ui.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000, help="port (default: 5000)")
    return parser


def _store_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, default=Path("bench-runs"), help="the runs' folder")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite in --output)")
    parser.add_argument(
        "--storage", help="the tuning studies' Optuna storage (default: sqlite in --output)"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and args.command != "run":
            raise BenchError(
                f"`bench {args.command}` does not run data-parallel; only `bench run` does "
                "(accelerate launch -m bench run ..., or bench run --processes N)"
            )
        return COMMANDS[args.command](args)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingError as error:
        print(f"run failed: {error}", file=sys.stderr)
        return 1


def _train_overrides(args: argparse.Namespace) -> dict[str, str]:
    values = {}
    if getattr(args, "shots", None) is not None:
        values["shots"] = args.shots
    return values


def _tasks(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(t.strip() for t in args.tasks.split(",") if t.strip()) if args.tasks else ()


def _split_sets(pairs: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    sections: dict[str, dict[str, str]] = {"train": {}, "method": {}}
    for item in pairs:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in sections:
            raise BenchError(
                f"--set {item!r} is invalid: expected method.NAME=VALUE or train.NAME=VALUE"
            )
        sections[section][name] = value
    return sections["train"], sections["method"]


def _request(args: argparse.Namespace):
    """The runner's Request from the flags of `run` or `sweep`, checked (names, options, files)
    before torch and the other heavy libraries load."""
    from bench.request import Request, resolve

    train, method = _split_sets(args.set)
    train.update(_train_overrides(args))
    for flag, key in (
        ("max_steps", "max_steps"), ("eval_every", "eval_every"), ("precision", "precision"),
        ("budget", "budget"),
    ):  # fmt: skip
        if getattr(args, flag) is not None:
            train[key] = getattr(args, flag)
    _selection(args, train)
    if getattr(args, "lr", None) is not None:
        method["lr"] = args.lr
    request = Request(
        method=args.method, setting=args.setting, suite=args.suite, seed=args.seed,
        output=args.output, tracking_uri=args.tracking_uri,
        backbone_init=getattr(args, "backbone_init", "pretrained"), train=train,
        method_options=method, progress=not getattr(args, "no_progress", True), tasks=_tasks(args),
        plugins=tuple(args.plugin), resume=getattr(args, "resume", None),
        trust_remote_code=args.trust_remote_code,
    )  # fmt: skip
    resolved = resolve(request)
    from bench.backbone import backbone_path

    backbone_path(resolved[0].backbone)  # a missing or altered backbone stops here, at once
    return request, resolved


def cmd_run(args: argparse.Namespace) -> int:
    _positive(processes=args.processes)
    request, _ = _request(args)
    from bench import distributed, runner
    from bench.interrupts import stop_on_sigterm
    from bench.report import results_table

    launched = distributed.launched()
    if launched == 1 and args.processes > 1:
        runner.prepare(request)  # every check, and the data cache, before any launch
        return distributed.launch(args.argv, args.processes)
    if launched > 1 and args.processes not in (1, launched):
        raise BenchError(f"--processes {args.processes}, but launched in {launched} processes")
    group = distributed.current()
    with group.first():  # process 0 fills the caches the others read
        prepared = runner.prepare(request)
    stop_on_sigterm()
    try:
        result = runner.execute(prepared)
    except KeyboardInterrupt:
        if not group.main:  # process 0 says where the run stopped
            return 130
        if not prepared.run_id:
            print("\ninterrupted before the run started", file=sys.stderr)
            return 130
        where = runner.describe_checkpoint(args.output, prepared.run_id)
        again = _without(args.argv, "--resume")
        command = shlex.join(["python", "-m", "bench", *again, "--resume", prepared.run_id])
        print(
            f"\ninterrupted: run {prepared.run_id} is KILLED, {where}; resume it with\n  {command}",
            file=sys.stderr,
        )
        return 130
    if result is None:  # not process 0 of a data-parallel run: that one reports
        return 0
    print()
    print(runner.header(prepared))
    print(prepared.suite.description)
    print(results_table(result.pairs, prepared.suite.language_names, result.notes))
    m = result.metrics
    print(
        f"trainable params {m['params/trainable']:,} of {m['params/total']:,}; "
        f"train {m['time/train_s']:.1f} s, {m['throughput/tokens_per_s']:,.0f} tokens/s; "
        f"peak RSS {m['memory/peak_rss_mb']:,.0f} MB"
    )
    if m["stages/trained"] or m["stages/cached"]:
        print(
            f"stages before training: {m['stages/trained']} trained "
            f"({m['time/stages_s']:.1f} s), {m['stages/cached']} from the cache; "
            f"{m['params/stage_trained']:,} parameters trained in them"
        )
    print(f"MLflow run {result.run_id} in {result.tracking_uri}")
    from bench.tracking import ui_hint

    print(ui_hint(result.tracking_uri, result.experiment_id, result.run_id))
    return 0


def _without(argv: list[str], flag: str) -> list[str]:
    """`argv` less `flag VALUE` and `flag=VALUE`."""
    kept, skip = [], False
    for item in argv:
        if not skip and item != flag and not item.startswith(f"{flag}="):
            kept.append(item)
        skip = item == flag and not skip
    return kept


def cmd_sweep(args: argparse.Namespace) -> int:
    _positive(trials=args.trials, workers=args.workers)
    request, _ = _request(args)
    from bench import sweep
    from bench.interrupts import stop_on_sigterm
    from bench.tracking import hide_password, ui_hint

    slurm = _launch_options(args, sweep.storage_url(request.output, args.storage))
    spec = sweep.prepare(
        request, trials=args.trials, study=args.study, storage=args.storage,
        space=sweep.parse_space(args.space), prune=not args.no_prune,
    )  # fmt: skip
    stop_on_sigterm()
    space = ", ".join(f"{k} {sweep.describe(v)}" for k, v in spec.space.items())
    print(f"study {spec.study} in {hide_password(spec.storage)}: {args.trials} trials over {space}")
    try:
        if args.launcher == "slurm":
            sweep.run_slurm(spec, args.workers, slurm)
        else:
            sweep.run(spec, args.workers)
    except KeyboardInterrupt:
        sweep.interrupted(spec)
        print(f"\nstopped: run the same command to resume study {spec.study}", file=sys.stderr)
        return 130
    print(sweep.render(spec, sweep.finish(spec)))
    print(ui_hint(spec.tracking_uri, spec.experiment_id, spec.parent_run_id))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from bench import leakage, overlap, plugins, request, suites
    from bench.backbone import backbone_path
    from bench.settings import SETTINGS, check_read

    plugins.load_builtins()
    suite = suites.get(args.suite)
    if _tasks(args):
        suite = suite.restricted(_tasks(args))
    setting = SETTINGS.get(args.setting)
    overrides, method = _split_sets(args.set)
    if method:
        raise BenchError(f"plan reads train options only, not method.{next(iter(method))}")
    overrides.update(_train_overrides(args))
    check_read(overrides, [setting.name])
    train = suite.train.with_values(overrides)
    plan = setting.build(suite, args.seed, train)
    leakage.check(plan, suite, train)
    print(json.dumps(plan.to_dict(), indent=2) if args.json else plan.render(), flush=True)
    # then what a run checks: its backbone and every split it reads (the Plan is printed even
    # where they cannot be had, as offline without the caches: then exit code 2 says so)
    backbone_path(suite.backbone, download=False)
    request.check_sources(suite, plan, {m.name: () for m in plan.models}, mlm=True)
    if not args.json:
        print(request.render_examples(suite, request.examples(suite, plan, train)))
        print(overlap.render(plan, suite, train))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from bench import plugins, suites
    from bench.config import TrainConfig
    from bench.method import METHODS
    from bench.settings import SETTINGS
    from bench.task import TASKS

    plugins.load_builtins()
    plugins.load_files(args.plugin)
    if (args.suite or args.method) and not args.options:
        raise BenchError("--suite and --method choose what `list --options` shows; add --options")
    methods = [METHODS.get(args.method).name] if args.method else METHODS.names()
    suite = suites.get(args.suite) if args.suite else None
    named = [(n, (f.__doc__ or "").strip().splitlines()[0]) for n, f in suites.SUITES.items()]
    sections = [
        ("methods", [(n, m.description) for n, m in METHODS.items()]),
        ("tasks", [(n, f"{t.kind} - {t.description}") for n, t in TASKS.items()]),
        ("settings", [(n, s.description) for n, s in SETTINGS.items()]),
        ("suites (--suite NAME, or --suite FILE.toml)", [*named, *suites.suite_files()]),
    ]
    for title, rows in sections:
        print(f"{title}:")
        width = max(len(name) for name, _ in rows)
        for name, text in rows:
            print(f"  {name.ljust(width)}  {text}")
    if not args.options:
        return 0
    if suite is None:
        print("train options (suites set the defaults):")
        _print_options(TrainConfig.describe())
    else:
        print(f"train options as suite {suite.name} sets them:")
        _print_options(suite.train.described())
    for name in methods:
        config = METHODS.get(name).Config()
        if suite is None:
            print(f"method options of {name}:")
            _print_options(config.describe())
        else:
            print(f"method options of {name} as suite {suite.name} sets them:")
            _print_options(config.with_values(suite.method_options.get(name, {})).described())
    return 0


def _print_options(rows: list[tuple[str, str, str]]) -> None:
    width = max(len(key) + len(default) for key, default, _ in rows) + 3
    for key, default, text in rows:
        print(f"  {f'{key}={default}'.ljust(width)}  {text}")


def cmd_backbone(args: argparse.Namespace) -> int:
    from bench import backbone

    if args.action == "check":
        backbone.verify(backbone.DEMO_DIR)
        print(f"{backbone.DEMO_DIR} matches its checksum")
        return 0
    out = args.output or backbone.DEMO_DIR
    kwargs = {} if args.steps is None else {"steps": args.steps}
    from bench import pretrain

    record = pretrain.build_demo(out, seed=args.seed, **kwargs)
    print(json.dumps(record, indent=2))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from bench import datacheck, plugins

    plugins.load_builtins()
    text, parsed = datacheck.check(args.path, args.task)
    print(text)
    datacheck.fail_if_malformed(args.path, parsed)
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    from bench.request import parse_methods

    methods = parse_methods(args.method, tuple(args.plugin))
    languages = _counts(args.languages, "--languages")
    from bench import params
    from bench.report import REPORTS

    shape, tasks = args.backbone_shape, args.tasks
    if len(methods) == 1 and len(languages) == 1:
        (entry,), (count,) = methods, languages
        groups = params.count(entry.method, shape, count, tasks, entry.options)
        text = params.render(groups, method=entry.label, shape=shape, languages=count, tasks=tasks)
        print(text)
        return 0
    trained = params.growth(methods, shape, languages, tasks)
    command = (
        f"python -m bench params --method {args.method} --backbone-shape {shape} "
        f"--languages {','.join(map(str, languages))} --tasks {tasks}"
    )
    text = params.render_growth(
        trained, shape=shape, languages=languages, tasks=tasks, command=command
    )
    return _write_report(text, args.report or REPORTS / f"params-{Path(shape).name}.md")


def _counts(text: str, flag: str) -> list[int]:
    """ "10,50" -> [10, 50]: positive, increasing."""
    try:
        counts = [int(item) for item in text.split(",")]
    except ValueError:
        counts = []
    if not counts or any(n < 1 for n in counts) or counts != sorted(set(counts)):
        raise BenchError(f"{flag} {text!r} is invalid: give increasing positive counts, e.g. 10,50")
    return counts


def cmd_compare(args: argparse.Namespace) -> int:
    from bench import suites
    from bench.request import parse_methods
    from bench.settings import SETTINGS, check_read

    _positive(seeds=args.seeds, **({"tune": args.tune} if args.tune is not None else {}))
    entries = parse_methods(args.methods, tuple(args.plugin))
    settings = [SETTINGS.get(s).name for s in args.settings.split(",") if s]
    name = suites.get(args.suite).name  # a suite file's name, not its path
    train, method = _split_sets(args.set)
    if args.max_steps is not None:
        train["max_steps"] = args.max_steps
    if args.budget is not None:
        train["budget"] = args.budget
    _selection(args, train)
    check_read(train, settings)  # each cell then leaves out what its setting does not read
    budgets = _budgets(args.budgets, args.max_steps)
    _positive(parallel=args.parallel)
    if args.parallel > 1 and args.launcher != "local":
        raise BenchError("--parallel runs local grid runs at once; Slurm schedules its own jobs")
    slurm = _launch_options(args)
    from bench import compare
    from bench.report import REPORTS

    entries = [dataclasses.replace(e, options={**method, **e.options}) for e in entries]
    output = args.output.resolve() if args.launcher == "slurm" else args.output  # jobs' cwd
    grid = {"suite": args.suite, "output": output, "train": train,
            "plugins": tuple(args.plugin), "tracking_uri": args.tracking_uri}  # fmt: skip
    launching = {"launcher": args.launcher, "parallel": args.parallel, "slurm": slurm}
    tuned = {}
    if args.tune is not None:
        setting = args.tune_setting or ("mixed" if "mixed" in settings else settings[0])
        tuned = compare.tune(entries, setting, args.tune, **grid)
    elif args.tune_setting is not None:
        raise BenchError("--tune-setting needs --tune N")
    command = "python -m bench compare" + "".join(f" --plugin {p}" for p in args.plugin)
    command += f" --methods {shlex.quote(args.methods)}"
    command += f" --settings {','.join(settings)} --seeds {args.seeds}"
    for flag in ("suite", "max_steps", "budgets", "budget", "selection", "tune", "tune_setting"):
        value = getattr(args, flag)
        if value is not None and (flag, value) != ("suite", "demo"):
            command += f" --{flag.replace('_', '-')} {shlex.quote(str(value))}"
    command += " --oracle" * args.oracle + " --run-average" * args.run_average
    command += " --reuse" * args.reuse
    if args.launcher != "local":
        command += f" --launcher {args.launcher}"
        command += "".join(f" --slurm {shlex.quote(item)}" for item in args.slurm)
    if args.parallel > 1:
        command += f" --parallel {args.parallel}"
    if args.tracking_uri:
        from bench.tracking import hide_password

        command += f" --tracking-uri {shlex.quote(hide_password(args.tracking_uri))}"
    command += "".join(f" --set {shlex.quote(item)}" for item in args.set)
    if budgets:
        if args.run_average:
            raise BenchError("--run-average and --budgets: give one (curves plot single runs)")
        from bench import curves

        found, failures = {}, []
        for steps in budgets:
            found[steps], failed = _grid(
                compare, command, entries, settings, args, tuned,
                {**grid, "train": {**train, "max_steps": steps}}, launching,
            )  # fmt: skip
            failures += failed
        path = args.report or REPORTS / name / "curves.md"  # plots: curves-<setting>.png
        path.parent.mkdir(parents=True, exist_ok=True)
        plots = curves.plot(found, path.with_suffix(""))
        _write_report(curves.render(found, suite=name, command=command, plots=plots), path)
        return _failed(failures, command)
    cells, failures = _grid(compare, command, entries, settings, args, tuned, grid, launching,
                            run_average=args.run_average)  # fmt: skip
    if not cells:  # every run failed: no report, the failures
        return _failed(failures, command)
    path = args.report or REPORTS / name / f"compare-{'-'.join(settings)}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    plots = compare.plot(cells, path.with_suffix(""))
    text = compare.render(cells, suite=name, command=command, plots=plots, tuned=tuned)
    _write_report(text, path)
    return _failed(failures, command)


def _grid(compare, command, entries, settings, args, tuned, grid, launching, run_average=False):
    """Runs the grid; on Ctrl-C, says how to continue it."""
    try:
        return compare.run_grid(
            entries, settings, args.seeds, reuse=args.reuse, tuned=tuned,
            run_average=run_average, **grid, **launching,
        )  # fmt: skip
    except KeyboardInterrupt:
        print(f"\nstopped: continue the grid with\n  {_continuing(command)}", file=sys.stderr)
        raise SystemExit(130) from None


def _continuing(command: str) -> str:
    return command if " --reuse" in command else f"{command} --reuse"


def _failed(failures: list, command: str) -> int:
    """Exit code 1 when runs of the grid failed, each named with its log; 0 otherwise."""
    if not failures:
        return 0
    print(f"{len(failures)} grid run(s) failed; the report holds the others:", file=sys.stderr)
    for failure in failures:
        print(f"  {failure.what}" + (f" (log: {failure.log})" if failure.log else ""),
              file=sys.stderr)  # fmt: skip
    print(f"after fixing them: {_continuing(command)}", file=sys.stderr)
    return 1


def _budgets(text: str | None, max_steps: int | None) -> list[int]:
    """`--budgets 200,400,800`: the labelled budgets of a learning curve, ascending."""
    if text is None:
        return []
    if max_steps is not None:
        raise BenchError("--budgets and --max-steps both set the steps: give one")
    try:
        budgets = sorted({int(b) for b in text.split(",") if b.strip()})
    except ValueError:
        raise BenchError(
            f"--budgets {text} is invalid: give steps as integers, e.g. 200,400,800"
        ) from None
    if len(budgets) < 2 or budgets[0] < 1:
        raise BenchError(f"--budgets {text} is invalid: give two or more step counts >= 1")
    return budgets


def cmd_report(args: argparse.Namespace) -> int:
    import shlex

    from bench import plugins, suites

    plugins.load_builtins()
    _positive(bootstrap=args.bootstrap)
    suite = suites.get(args.suite)
    from bench import report
    from bench.tracking import resolve_uri

    name = "zero-resource" if args.setting == report.ZERO_TEXT else args.setting
    path = args.report or report.REPORTS / suite.name / f"{name}.md"
    report.check_writable(path)
    found = report.build(
        resolve_uri(args.output, args.tracking_uri), suite, args.setting,
        baseline=args.baseline, replicates=args.bootstrap, extra_filter=args.filter,
    )  # fmt: skip
    command = "python -m bench report"
    defaults = vars(build_parser().parse_args(["report"]))
    for flag, default in defaults.items():
        if (value := getattr(args, flag)) != default:
            command += f" --{flag.replace('_', '-')} {shlex.quote(str(value))}"
    print(report.save(found, path, command))
    print(f"written to {path.resolve()}")
    return 0


def cmd_perf(args: argparse.Namespace) -> int:
    if args.startup:
        return _startup(args)
    if args.precision:
        return _precision(args)
    import torch

    from bench import perf, plugins, suites
    from bench.method import METHODS

    plugins.load_builtins()
    _positive(repeats=args.repeats, threads=args.threads)
    torch.set_num_threads(args.threads)
    cases = [c for c in perf.CASES if not (args.quick and c.batch * c.length > 8 * 128)]
    _positive(method_steps=args.method_steps)
    names = perf.RUN_METHODS
    if args.methods is not None:  # "none" (or empty) runs no method
        names = [m for m in args.methods.split(",") if m and m != "none"]
    for name in names:
        METHODS.get(name)  # an unknown name stops here, before minutes of timing
    prepared = None
    if args.preprocessing:  # first: a suite that cannot be read stops it before the timings
        suites.get(args.preprocessing)  # an unknown suite or a bad suite file: exit code 2
        prepared = perf.preprocessing(args.preprocessing)
    timings = []
    for case in cases:
        print(f"timing {case.shape}, batch {case.batch} x {case.length} ...", flush=True)
        timings.append(perf.measure(case, repeats=args.repeats))
    shaped = perf.shaped_steps(list(names), repeats=args.repeats, threads=args.threads)
    runs = perf.run_methods(list(names), steps=args.method_steps, threads=args.threads)
    parallel = None
    if perf.DATA_PARALLEL_METHOD in names:  # against its one-process run just above
        (one,) = [r for r in runs if r.method == perf.DATA_PARALLEL_METHOD]
        (two,) = perf.run_methods(
            [perf.DATA_PARALLEL_METHOD], steps=args.method_steps,
            threads=max(args.threads // 2, 1), processes=2,
        )  # fmt: skip
        parallel = perf.render_data_parallel(
            one, two, steps=args.method_steps, threads=args.threads
        )
    command = "python -m bench perf" + (" --quick" if args.quick else "")
    for flag, default in (
        ("repeats", 3), ("threads", 2), ("methods", None), ("method_steps", 200),
        ("preprocessing", None),
    ):  # fmt: skip
        if getattr(args, flag) != default:
            command += f" --{flag.replace('_', '-')} {getattr(args, flag)}"
    text = perf.render(timings, command=command, threads=args.threads, repeats=args.repeats)
    if shaped:
        text += "\n" + perf.render_shaped(shaped, repeats=args.repeats, threads=args.threads)
    if runs:
        text += "\n" + perf.render_methods(runs, steps=args.method_steps, threads=args.threads)
    if parallel:
        text += "\n" + parallel
    if prepared:
        text += "\n" + perf.render_preprocessing(args.preprocessing, prepared)
    return _write_report(text, args.report or perf.REPORT)


def _startup(args: argparse.Namespace) -> int:
    from bench import perf, startup

    _positive(repeats=args.repeats)
    figures, others = startup.measure(args.repeats)
    text = startup.render(figures, others=others, machine=perf.machine(), repeats=args.repeats)
    return _write_report(text, args.report or perf.REPORT.with_name("startup.md"))


def _precision(args: argparse.Namespace) -> int:
    import tempfile

    import torch

    from bench import plugins, precision, suites
    from bench.method import METHODS
    from bench.report import REPORTS

    plugins.load_builtins()
    _positive(threads=args.threads, precision_steps=args.precision_steps)
    (method, *rest) = (args.methods or "hyperx").split(",")
    if rest:
        raise BenchError(f"--methods {args.methods}: --precision times one method")
    METHODS.get(method)
    suite = suites.get(args.precision)  # an unknown suite or a bad suite file: exit code 2
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as output:
        figures = precision.measure(
            args.precision, method, steps=args.precision_steps, repeats=1, output=Path(output)
        )
    command = f"python -m bench perf --precision {args.precision} --methods {method}"
    if args.precision_steps != 20:
        command += f" --precision-steps {args.precision_steps}"
    if args.threads != 2:
        command += f" --threads {args.threads}"
    text = precision.render(
        figures, command=command, threads=args.threads,
        load=f"load average {load:.1f} when it started",
    )  # fmt: skip
    return _write_report(text, args.report or REPORTS / suite.name / "precision.md")


def cmd_transfer(args: argparse.Namespace) -> int:
    from bench import plugins, transfer
    from bench.suites import SUITES

    plugins.load_builtins()
    _positive(seeds=args.seeds)
    train = {} if args.max_steps is None else {"max_steps": args.max_steps}
    table = transfer.measure(args.output, seeds=tuple(range(args.seeds)), train=train)
    command = "python -m bench transfer" + (f" --seeds {args.seeds}" if args.seeds != 3 else "")
    if args.max_steps is not None:
        command += f" --max-steps {args.max_steps}"
    text = transfer.render(table, suite=SUITES.get("demo")(), command=command)
    return _write_report(text, args.report or transfer.REPORT)


def cmd_export(args: argparse.Namespace) -> int:
    from bench import archive, plugins, suites
    from bench.sweep import storage_url
    from bench.tracking import resolve_uri

    plugins.load_builtins()
    suite = suites.get(args.suite)
    folder = args.to or Path("results") / suite.name
    uri = resolve_uri(args.output, args.tracking_uri)
    storage = storage_url(args.output, args.storage)
    runs, new, studies = archive.export(uri, storage, suite.name, folder)
    print(f"exported {runs} runs ({new} new) and {studies} studies of suite {suite.name} "
          f"to {folder}")  # fmt: skip
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from bench import archive
    from bench.sweep import storage_url
    from bench.tracking import resolve_uri

    uri = resolve_uri(args.output, args.tracking_uri)
    storage = storage_url(args.output, args.storage)
    read, added, studies, suite = archive.import_folder(
        args.folder, uri, storage, args.output / "artifacts"
    )
    print(f"imported {added} of {read} runs (the rest were there) and {studies} studies of "
          f"suite {suite} into {uri}")  # fmt: skip
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from bench import ui

    return ui.serve(args.output, args.tracking_uri, args.host, args.port)


def _write_report(text: str, path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(text)
    print(f"written to {path.resolve()}")
    return 0


def _positive(**flags: int) -> None:
    for name, value in flags.items():
        if value < 1:
            raise BenchError(f"--{name} {value} is invalid: must be >= 1")


def cmd_languages(args: argparse.Namespace) -> int:
    from bench import plugins, suites, typology

    plugins.load_builtins()
    print(typology.languages_table(args.codes, suites.get(args.suite)))
    return 0


COMMANDS = {
    "run": cmd_run,
    "sweep": cmd_sweep,
    "plan": cmd_plan,
    "list": cmd_list,
    "languages": cmd_languages,
    "backbone": cmd_backbone,
    "transfer": cmd_transfer,
    "params": cmd_params,
    "data": cmd_data,
    "perf": cmd_perf,
    "compare": cmd_compare,
    "report": cmd_report,
    "export": cmd_export,
    "import": cmd_import,
    "ui": cmd_ui,
}
