"""The shared suite on a real multilingual encoder (multilingual-e5-small, built offline by
../shared/tools/e5_small_offline.py from two package-registry wheels): a real run end to end."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from shared_data import SHARED, needs_shared

from bench import runner

ROOT = Path(__file__).resolve().parents[1]
TOOL = SHARED.parent / "tools" / "e5_small_offline.py"
TINY = {"max_steps": 2, "eval_every": 2, "batch_size": 4, "train_cap": 32, "mlm_cap": 16}


@pytest.fixture(scope="module")
def pasted(tmp_path_factory):
    """The README's real-suite commands, pasted into a shell as written, from the root of a
    repository with `../shared` beside it: they build e5-small beside the repository (about
    90 s, most of it pip) and plan the shared suite. The layout: work/{xlt-bench, shared}."""
    text = (ROOT / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if TOOL.name in b]
    work = tmp_path_factory.mktemp("work")
    repository = work / "xlt-bench"
    shutil.copytree(ROOT / "suites", repository / "suites")  # what the commands read of it
    (work / "shared").symlink_to(SHARED.parent)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        ["bash", "-e", "-c", block], cwd=repository, env=env, capture_output=True, text=True
    )
    if done.returncode != 0 and not (work / "e5-small" / "config.json").is_file():
        pytest.skip(f"e5-small could not be built (no package registry?): {done.stderr[-300:]}")
    return block, done, work


@needs_shared
def test_the_readmes_real_suite_commands_work_as_pasted(pasted):
    block, done, work = pasted
    assert "export BENCH_DATA_DIR=../shared/data BENCH_E5_DIR=../e5-small" in block
    assert done.returncode == 0, done.stderr[-3000:]
    assert (work / "e5-small" / "config.json").is_file()  # beside the repository, not in it
    assert re.search(r"\n  train +pos/eng@dev\[:1800\] +1,800 sentences\n", done.stdout)
    # every test set whole: no evaluation cap
    assert re.search(r"\n  eval +ner/yor@test \(source\) +1,964 sentences\n", done.stdout)


@pytest.fixture(scope="module")
def e5(pasted):
    """BENCH_E5_DIR when it holds the model; otherwise the one the README's commands built."""
    given = os.environ.get("BENCH_E5_DIR")
    if given and (Path(given) / "config.json").is_file():
        return Path(given)
    return pasted[2] / "e5-small"


@needs_shared
def test_hyperx_runs_on_the_shared_suite_with_e5_from_its_mlm_head_stage(e5, tmp_path, monkeypatch):
    """e5 ships no MLM head: the run first trains one over the frozen encoder (the MLM-head
    stage), and Hyper-X then trains MLM through it, frozen, as through a published head."""
    monkeypatch.setenv("BENCH_DATA_DIR", str(SHARED))
    monkeypatch.setenv("BENCH_E5_DIR", str(e5))
    request = runner.Request(
        method="hyperx", suite=str(ROOT / "suites" / "shared.toml"), output=tmp_path,
        train={**TINY, "eval_cap": 8, "head_steps": 3},
        method_options={"bottleneck": 8, "source_dim": 8}, progress=False,
    )  # fmt: skip
    prepared = runner.prepare(request)
    result = runner.execute(prepared)
    assert result.metrics["mlm-head/trained"] == 1 and result.metrics["budget/stage_steps"] == 3
    assert prepared.head is not None and (prepared.head / runner.HEAD_WEIGHTS).is_file()
    model = runner.build_model(prepared, prepared.plan.models[0])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(".mlm_head." in n or "word_embeddings" in n for n in trainable)
    roles = {(r.task, r.language): r.role for r in result.pairs}
    assert roles[("pos", "yor")] == "target" and roles[("ner", "yor")] == "source"
    assert all(len(r.gold) <= 8 for r in result.pairs)
