"""Bad input, one table: every case exits with code 2 and one `error:` line that names the bad
value, before any MLflow run or result exists. Data cases break one file of a small suite
written here; the suite as written runs (the first test), so each case fails for its edit. Last,
the tracking server check: any HTTP answer passes it, silence fails it in seconds."""

import http.server
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bench.cli import main
from bench.errors import BenchError
from bench.tracking import Tracker, hide_password

CONLLU = (
    "# text = Hi there .\n"
    "1\tHi\thi\tINTJ\t_\t_\t0\troot\t_\t_\n"
    "2\tthere\tthere\tADV\t_\t_\t1\tadvmod\t_\t_\n"
    "3\t.\t.\tPUNCT\t_\t_\t1\tpunct\t_\t_\n\n"
) * 2
NER = "Ada B-PER\nLovelace I-PER\nin O\nLondon B-LOC\n\n" * 2
NLI = (
    "premise\thypothesis\tlabel\n"
    "Ada wrote .\tShe wrote .\tentailment\nAda ran .\tAda sat .\tneutral\n"
)
SUITE = """backbone = "demo"
[train]
max_steps = 2
eval_every = 2
[tasks.pos.files.en]
train = "en.conllu"
dev = "en-dev.conllu"
test = "en-test.conllu"
[tasks.pos.files.de]
test = "de.conllu"
[tasks.ner]
labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
[tasks.ner.files.de]
train = "de.txt"
dev = "de-dev.txt"
test = "de-test.txt"
[tasks.nli.files.en]
train = "en.tsv"
dev = "en-dev.tsv"
test = "en-test.tsv"
[settings.mixed]
train = ["pos/en", "ner/de", "nli/en"]
"""
# the cases edit the training files; every split holds sentences of its own (`bench.overlap`)
FILES = {
    "mine.toml": SUITE, "en.conllu": CONLLU, "de.txt": NER, "en.tsv": NLI,
    "en-dev.conllu": CONLLU.replace("Hi", "Hey"), "en-test.conllu": CONLLU.replace("Hi", "Ho"),
    "de.conllu": CONLLU.replace("there", "dort"),
    "de-dev.txt": NER.replace("London", "Paris"), "de-test.txt": NER.replace("London", "Rome"),
    "en-dev.tsv": NLI.replace("Ada", "Bo"), "en-test.tsv": NLI.replace("Ada", "Cy"),
}  # fmt: skip
# every case runs the dummy method for two steps: one that wrongly starts training ends fast
BASE = ["run", "--method", "dummy", "--max-steps", "2", "--eval-every", "2", "--no-progress"]
SUITE_ARGS = ["--suite", "{tmp}/mine.toml"]


def case(name, args, fragment, edits=None, stopped=None):
    """`args` after BASE; `edits`: file -> new text, or (old, new) replaced once in it;
    `stopped`: first make a run of the suite that was interrupted (its id is `{run}`), with
    these files (name -> bytes) as its latest checkpoint."""
    return pytest.param(args, fragment, edits or {}, stopped, id=name)


CASES = [
    # unknown names
    case("unknown method", ["--method", "nope"], "unknown method 'nope'; known: adapter,"),
    case(
        "misspelt method", ["--method", "ful-ft"],
        "unknown method 'ful-ft' (did you mean 'full-ft'?)",
    ),
    case("unknown setting", ["--setting", "zero-shot"], "unknown setting 'zero-shot'"),
    case(
        "setting the suite file lacks", [*SUITE_ARGS, "--setting", "few-shot"],
        "suite 'mine' defines the settings mixed; not 'few-shot'",
    ),
    case("unknown suite", ["--suite", "demoo"], "unknown suite 'demoo' (did you mean 'demo'?)"),
    case(
        "missing suite file", ["--suite", "{tmp}/none.toml"],
        "suite file {tmp}/none.toml does not exist",
    ),
    case("unknown task", ["--tasks", "pos,dep"], "unknown task 'dep'"),
    case(
        "unknown task in a suite file", SUITE_ARGS, "unknown task 'dep'",
        {"mine.toml": ("[tasks.nli.files.en]", "[tasks.dep.files.en]")},
    ),
    case("unknown option key", ["--set", "method.dropout=0.1"], "unknown option method.dropout"),
    case(
        "misspelt option key", ["--set", "method.weight_decy=0.1"],
        "unknown option method.weight_decy (did you mean method.weight_decay?)",
    ),
    case(
        "a setting's option in another setting", ["--setting", "mixed", "--shots", "5"],
        "train.shots=5 does nothing in setting 'mixed': only few-shot reads it",
    ),
    case(
        "unknown option key in a suite file", SUITE_ARGS,
        "unknown option train.max_stepz (did you mean train.max_steps?)",
        {"mine.toml": ("max_steps = 2", "max_stepz = 2")},
    ),
    case("option without a section", ["--set", "lr=0.1"], "--set 'lr=0.1' is invalid"),
    case("unknown backbone init", ["--backbone-init", "zeros"], "backbone init 'zeros' is invalid"),
    # invalid hyperparameters
    case("negative lr", ["--lr", "-1"], "method.lr=-1.0 is invalid: must be > 0"),
    case("lr not a number", ["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    case("lr not finite", ["--lr", "nan"], "method.lr=nan must be a finite number"),
    case("zero max steps", ["--max-steps", "0"], "train.max_steps=0 is invalid: must be > 0"),
    case("zero eval every", ["--eval-every", "0"], "train.eval_every=0 is invalid: must be > 0"),
    case(
        "negative shots", ["--setting", "few-shot", "--shots", "-2"],
        "train.shots=-2 is invalid: must be > 0",
    ),
    case(
        "warm-up ratio above 1", ["--set", "train.warmup_ratio=2"],
        "train.warmup_ratio=2.0 is invalid: must be <= 1",
    ),
    case(
        "batch size not a number", ["--set", "train.batch_size=big"],
        "train.batch_size='big' is not a valid int",
    ),
    case("seed not a number", ["--seed", "x"], "argument --seed: invalid int value: 'x'"),
    # malformed files
    case(
        "conllu line of 9 columns", SUITE_ARGS,
        "en.conllu: line 3: expected 10 tab-separated fields, found 9",
        {"en.conllu": ("there\tthere\tADV", "there\tADV")},
    ),
    case(
        "conllu id not a number", SUITE_ARGS, "en.conllu: line 2: ID 'x' is not a word number",
        {"en.conllu": ("\n1\tHi", "\nx\tHi")},
    ),
    case(
        "conllu id out of sequence", SUITE_ARGS,
        "en.conllu: line 3: ID '3' is out of sequence: expected 2",
        {"en.conllu": ("\n2\tthere", "\n3\tthere")},
    ),
    case(
        "conllu range backwards", SUITE_ARGS, "en.conllu: line 2: ID '2-1' is not a word number",
        {"en.conllu": ("\n1\tHi", "\n2-1\tHi\t_\t_\t_\t_\t_\t_\t_\t_\n1\tHi")},
    ),
    case(
        "bio tag without a type", SUITE_ARGS, "de.txt: line 2: tag 'B-' is not BIO",
        {"de.txt": ("I-PER", "B-")},
    ),
    case(
        "bio tag with a prefix other than B or I", SUITE_ARGS,
        "de.txt: line 1: tag 'Q-PER' is not BIO",
        {"de.txt": ("B-PER", "Q-PER")},
    ),
    case(
        "ner line of 3 fields", SUITE_ARGS, "de.txt: line 3: expected 'token TAG', found 3 fields",
        {"de.txt": ("in O", "in O O")},
    ),
    case(
        "nli header without label", SUITE_ARGS, "en.tsv: line 1: header lacks label",
        {"en.tsv": ("\tlabel\n", "\tgold\n")},
    ),
    # unknown labels
    case(
        "upos outside UD's 17 (a target's test file)", SUITE_ARGS,
        "de.conllu: line 2: UPOS 'INTERJ' is not one of the 17 universal tags",
        {"de.conllu": ("\tINTJ\t", "\tINTERJ\t")},
    ),
    case(
        "nli label outside the three", SUITE_ARGS,
        "en.tsv: line 3: label 'maybe' is not one of entailment, neutral, contradiction",
        {"en.tsv": ("\tneutral", "\tmaybe")},
    ),
    case(
        "ner label outside the suite's", SUITE_ARGS, "has labels B-ORG outside the task's",
        {"de.txt": ("London B-LOC", "London B-ORG")},
    ),
    # empty files
    case("empty conllu file", SUITE_ARGS, "en.conllu: line 1: no sentences", {"en.conllu": ""}),
    case("empty ner file", SUITE_ARGS, "de.txt: line 1: no sentences", {"de.txt": "\n\n"}),
    case("empty nli file", SUITE_ARGS, "en.tsv: line 1: no examples", {"en.tsv": ""}),
    case(
        "nli file with a header only", SUITE_ARGS, "en.tsv: line 1: no examples",
        {"en.tsv": "premise\thypothesis\tlabel\n"},
    ),
    # missing splits and languages
    case(
        "trained language without a train file", SUITE_ARGS,
        "ner/deu has no 'train' split (it has: dev, test)",
        {"mine.toml": ('train = "de.txt"\n', "")},
    ),
    case(
        "source language without data", SUITE_ARGS,
        "pair 'pos/fra' names fra, which has no pos data (it has: eng, deu)",
        {"mine.toml": ('"pos/en", ', '"pos/en", "pos/fr", ')},
    ),
    case(
        "target language without files", SUITE_ARGS, "pos/fr lists no files",
        {"mine.toml": ("[tasks.ner]", "[tasks.pos.files.fr]\n[tasks.ner]")},
    ),
    # suite files
    case(
        "suite file not TOML", SUITE_ARGS, "suite file {tmp}/mine.toml is not valid TOML",
        {"mine.toml": ("max_steps = 2", "max_steps = ")},
    ),
    case(
        "pairs as a string, not a list", SUITE_ARGS,
        "`settings.mixed.train` must be a list of strings, not 'pos/en'",
        {"mine.toml": ('train = ["pos/en", "ner/de", "nli/en"]', 'train = "pos/en"')},
    ),
    case(
        "a language's files as a string, not a table", SUITE_ARGS,
        "`tasks.nli.files.en` must be a table, not 'en.tsv'",
        {"mine.toml": ("[tasks.nli.files.en]\ntrain =", "[tasks.nli.files]\nen =")},
    ),
    case(
        "backbone folder without config.json", SUITE_ARGS,
        "backbone folder {tmp}/model has no config.json",
        {"mine.toml": ('backbone = "demo"', 'backbone = "./model"'), "model/vocab.txt": "[PAD]\n"},
    ),
    case(
        "backbone that ships its own code", SUITE_ARGS,
        "ships its own code (config.json has auto_map); it runs only with --trust-remote-code",
        {"mine.toml": ('backbone = "demo"', 'backbone = "./model"'),
         "model/config.json": '{"model_type": "bert", "auto_map": {"AutoConfig": "my.Config"}}'},
    ),
    # resuming
    case(
        "resume a run not in the store", [*SUITE_ARGS, "--resume", "0123abcd"],
        "--resume 0123abcd: no such run; there is no MLflow store sqlite:///",
    ),
    case(
        "resume a run the store lacks", [*SUITE_ARGS, "--resume", "0123abcd"],
        "--resume 0123abcd: no such run in sqlite:///", stopped={},
    ),
    case(
        "resume with other flags", [*SUITE_ARGS, "--resume", "{run}", "--lr", "0.1"],
        "--resume {run}: the run has method.lr=0.0005, this command method.lr=0.1",
        stopped={},
    ),
    case(
        "resume a run whose checkpoint is elsewhere", [*SUITE_ARGS, "--resume", "{run}"],
        "--resume {run}: its checkpoint (", stopped={"elsewhere": b""},
    ),
    case(
        "corrupt checkpoint: progress not JSON", [*SUITE_ARGS, "--resume", "{run}"],
        "is unreadable (JSONDecodeError", stopped={"progress.json": b'{"version": 1, "run'},
    ),
    case(
        "corrupt checkpoint: truncated state", [*SUITE_ARGS, "--resume", "{run}"],
        "is unreadable (", stopped={"progress.json": b'{"version": 1}', "state.pt": b"PK\x03"},
    ),
    case(
        "checkpoint of another version", [*SUITE_ARGS, "--resume", "{run}"],
        "is unreadable (ValueError: version 0, not 1)",
        stopped={"progress.json": b'{"version": 0}'},
    ),
    # where the run would go
    case(
        "output folder under a file", ["--output", "{tmp}/file/runs"],
        "output folder {tmp}/file/runs is not writable: Not a directory", {"file": "a file\n"},
    ),
    case(
        "unreachable tracking server", ["--tracking-uri", "http://127.0.0.1:{closed}"],
        "tracking server http://127.0.0.1:{closed} cannot be reached (Connection refused)",
    ),
    case(
        "unreachable tracking server with a password",
        ["--tracking-uri", "http://ada:s3cret@127.0.0.1:{closed}/"],
        "tracking server http://ada:***@127.0.0.1:{closed}/ cannot be reached",
    ),
]  # fmt: skip


def write_world(folder: Path, edits: dict) -> None:
    """The suite and its files in `folder`, with `edits` made (each must change something)."""
    texts = dict(FILES)
    for name, edit in edits.items():
        if isinstance(edit, tuple):
            old, new = edit
            assert old in texts[name], f"{name} has no {old!r} to edit"
            texts[name] = texts[name].replace(old, new, 1)
        else:
            texts[name] = edit
    for name, text in texts.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")


def stopped_run(folder: Path, checkpoint: dict[str, bytes]) -> str:
    """The id of a run of the suite in `folder` that is KILLED, with `checkpoint` as its latest
    (`elsewhere`: none here, though the run says it has one)."""
    out = folder / "runs"
    assert main([*BASE, "--suite", str(folder / "mine.toml"), "--output", str(out)]) == 0
    ((run_id, _),) = runs_in(out)
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    client.set_terminated(run_id, "KILLED")
    if "elsewhere" in checkpoint:
        client.set_tag(run_id, "checkpoint", "/elsewhere/resume/3 (model all, step 2)")
    elif checkpoint:
        resume = out / "checkpoints" / run_id / "resume"
        (resume / "1").mkdir(parents=True)
        (resume / "latest").write_text("1")
        for name, data in checkpoint.items():
            (resume / "1" / name).write_bytes(data)
    for results in out.rglob("results.json"):  # the run's own, not a half-written one
        results.unlink()
    return run_id


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when this returns: nothing listens there


def runs_in(folder: Path) -> list[tuple[str, str]]:
    """(run id, status) of every MLflow run in any sqlite store under `folder`."""
    found = []
    for db in folder.rglob("mlflow.db"):
        with sqlite3.connect(db) as connection:
            found += connection.execute("SELECT run_uuid, status FROM runs").fetchall()
    return found


def test_the_suite_the_cases_break_runs_as_written(tmp_path):
    write_world(tmp_path, {})
    out = tmp_path / "runs"
    assert main([*BASE, "--suite", str(tmp_path / "mine.toml"), "--output", str(out)]) == 0
    ((_, status),) = runs_in(out)
    assert status == "FINISHED" and list(out.rglob("results.json"))


@pytest.mark.parametrize(("args", "fragment", "edits", "stopped"), CASES)
def test_bad_input_is_one_line_exit_2_and_nothing_half_written(
    tmp_path, capfd, args, fragment, edits, stopped
):
    write_world(tmp_path, edits)
    places = {"tmp": tmp_path, "closed": closed_port()}
    if stopped is not None:
        places["run"] = stopped_run(tmp_path, stopped)
        capfd.readouterr()
    before = runs_in(tmp_path)
    argv = [*BASE, "--output", str(tmp_path / "runs"), *(a.format_map(places) for a in args)]
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    err = capfd.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and err.endswith("\n"), err
    assert fragment.format_map(places) in err
    assert runs_in(tmp_path) == before  # no new run, and none changed (or left RUNNING)
    assert not list(tmp_path.rglob("results.json"))


@pytest.fixture()
def server():
    """A local HTTP server that lets no one in: 401 at its root, 404 elsewhere."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(401 if self.path == "/" else 404)
            self.end_headers()

        def log_message(self, *args):  # quiet
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_any_http_answer_is_a_reachable_tracking_server(server):
    Tracker.check_reachable(server)  # 401
    Tracker.check_reachable(server.replace("://", "://ada:s3cret@") + "/mlflow")  # 404
    Tracker.check_reachable("sqlite:////nowhere/mlflow.db")  # not a server: not checked


def test_a_tracking_server_that_never_answers_fails_at_the_timeout():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()  # connections wait in the backlog; nothing ever answers them
        started = time.perf_counter()
        with pytest.raises(BenchError, match=r"127\.0\.0\.1:\d+ cannot be reached \(timed out\)"):
            Tracker.check_reachable(f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=0.5)
    assert time.perf_counter() - started < 5


def test_a_password_is_hidden_up_to_the_host():
    shown = hide_password("http://ada:p@ss:w@127.0.0.1:5000/x@y")
    assert shown == "http://ada:***@127.0.0.1:5000/x@y"
