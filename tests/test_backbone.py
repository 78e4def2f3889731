"""The shipped demo backbone: verified by checksum, refused with the rebuild command if altered."""

import json
import shutil

import pytest
import torch
from transformers import AutoModelForMaskedLM

from bench import backbone
from bench.cli import main
from bench.runner import load_backbone
from tasks import synthetic


def test_shipped_backbone_matches_its_build_record():
    backbone.verify(backbone.DEMO_DIR)
    record = json.loads((backbone.DEMO_DIR / "build.json").read_text())
    assert record["command"].startswith("python -m bench backbone build demo")
    assert record["pretrain_languages"] == list(synthetic.PRETRAIN_LANGUAGES)
    losses = record["mlm_loss_heldout"]
    # pretraining languages are modelled well below the loss of a uniform guess; others are not
    for language in synthetic.PRETRAIN_LANGUAGES:
        assert losses[language] < record["mlm_loss_uniform"] - 2


@pytest.mark.parametrize("damage", ["flip a byte", "delete the weights"])
def test_altered_backbone_is_refused_with_the_rebuild_command(
    tmp_path, monkeypatch, capsys, damage
):
    copy = tmp_path / "demo"
    shutil.copytree(backbone.DEMO_DIR, copy)
    weights = copy / "model.safetensors"
    if damage == "flip a byte":
        data = bytearray(weights.read_bytes())
        data[-1] ^= 1
        weights.write_bytes(bytes(data))
    else:
        weights.unlink()
    monkeypatch.setattr(backbone, "DEMO_DIR", copy)
    out = tmp_path / "runs"
    assert main(["run", "--method", "dummy", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "python -m bench backbone build demo" in err
    assert not (out / "mlflow.db").exists()


def test_random_init_keeps_the_shape_and_changes_the_weights():
    pretrained = AutoModelForMaskedLM.from_pretrained(backbone.DEMO_DIR)
    model, untrained = load_backbone("demo", "random")
    assert untrained == frozenset()  # nothing is "lacking" from a model built untrained
    assert model.config.to_dict() == pretrained.config.to_dict()
    a = pretrained.bert.encoder.layer[0].attention.self.query.weight
    b = model.bert.encoder.layer[0].attention.self.query.weight
    assert a.shape == b.shape and not torch.equal(a, b)
