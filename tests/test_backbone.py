"""The shipped demo backbone: verified by checksum, refused with the rebuild command if altered."""

import json
import shutil

import pytest
import torch
from transformers import AutoModelForMaskedLM

from bench import backbone, params
from bench.cli import main
from bench.method import Backbone
from bench.runner import load_backbone
from methods.adapter import Adapter
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


def test_an_encoder_published_without_mlm_head_trains_a_fresh_one_with_mlm(tmp_path):
    """e5 ships its encoder alone: the MLM head transformers adds is random, so wherever MLM is
    used it must train (and be counted), while the tied decoder stays the frozen embeddings."""
    encoder = AutoModelForMaskedLM.from_pretrained(backbone.DEMO_DIR, attn_implementation="eager")
    encoder.bert.save_pretrained(tmp_path)  # the encoder without its head
    model, untrained = load_backbone(str(tmp_path), "pretrained")
    assert untrained and all(name.startswith("cls.") for name in untrained)
    config = Adapter.Config().with_values({"mlm": True})
    plan, _ = params.stand_in_plan(2, 1)
    shell = Backbone("encoder", model, None, "pretrained", untrained=untrained)
    built = Adapter.build(shell, plan, params.stand_in_tasks(["ner", "mlm"]), config)
    trainable = {n for n, p in built.named_parameters() if p.requires_grad}
    assert "heads.mlm_head.predictions.transform.dense.weight" in trainable
    assert not any("word_embeddings" in n or "decoder.weight" in n for n in trainable)
    without = Adapter.build(
        Backbone("encoder", load_backbone(str(tmp_path), "pretrained")[0], None, "pretrained"),
        plan, params.stand_in_tasks(["ner", "mlm"]), config,
    )  # fmt: skip
    assert not any(".transform." in n for n, p in without.named_parameters() if p.requires_grad)
