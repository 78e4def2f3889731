"""Safe loading: a checkpoint cannot run code, and a backbone's own code runs only when asked."""

import json
import os
import pickle
import shutil
import subprocess
import sys

import pytest
import torch
from test_bad_input import BASE, write_world

from bench.backbone import DEMO_DIR
from bench.checkpoint import Checkpoints
from bench.errors import BenchError


class Payload:
    """What a malicious checkpoint holds: unpickling it would run a command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_that_would_run_code_is_refused_unrun(tmp_path):
    marker = tmp_path / "ran"
    folder = tmp_path / "resume"
    (folder / "1").mkdir(parents=True)
    (folder / "latest").write_text("1")
    (folder / "1" / "progress.json").write_text('{"version": 1, "run": {}, "loop": {}}')
    torch.save({"optimizer": Payload(marker)}, folder / "1" / "state.pt")
    with pytest.raises(BenchError, match=r"is unreadable \(UnpicklingError: Weights only load"):
        Checkpoints(folder).latest()
    assert not marker.exists()
    pickle.loads(pickle.dumps(Payload(marker)))  # the same bytes, unpickled unsafely, would
    assert marker.exists()  # have run it


CUSTOM = """
import os
from pathlib import Path
from transformers import BertConfig, BertForMaskedLM


class CustomConfig(BertConfig):
    pass


class CustomModel(BertForMaskedLM):
    config_class = CustomConfig

    def __init__(self, config):
        super().__init__(config)
        Path(os.environ["BENCH_TEST_MARKER"]).touch()  # proof that this code ran
"""


@pytest.mark.slow
def test_a_backbone_with_its_own_code_runs_only_with_trust_remote_code(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(DEMO_DIR, model)
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "custom.CustomConfig",
        "AutoModelForMaskedLM": "custom.CustomModel",
    }
    (model / "config.json").write_text(json.dumps(config))
    (model / "custom.py").write_text(CUSTOM)
    write_world(tmp_path, {"mine.toml": ('backbone = "demo"', f'backbone = "{model}"')})
    marker = tmp_path / "ran"
    env = {**os.environ, "BENCH_TEST_MARKER": str(marker), "HF_HOME": str(tmp_path / "hf")}
    command = [sys.executable, "-m", "bench", *BASE, "--suite", str(tmp_path / "mine.toml")]

    refused = subprocess.run([*command, "--output", str(tmp_path / "a")], capture_output=True,
                             text=True, env=env)  # fmt: skip
    assert refused.returncode == 2
    assert "ships its own code (config.json has auto_map)" in refused.stderr
    assert not marker.exists() and not (tmp_path / "a").exists()

    trusted = subprocess.run([*command, "--output", str(tmp_path / "b"), "--trust-remote-code"],
                             capture_output=True, text=True, env=env)  # fmt: skip
    assert trusted.returncode == 0, trusted.stderr
    assert marker.exists()
