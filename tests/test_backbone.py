"""The shipped demo backbone: verified by checksum, refused with the rebuild command if altered."""

import dataclasses
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, AutoTokenizer

from bench import averaging, backbone, params, runner, suites
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


@pytest.fixture(scope="module")
def headless(tmp_path_factory):
    """The demo encoder saved without its MLM head, as e5 is published."""
    folder = tmp_path_factory.mktemp("headless")
    encoder = AutoModelForMaskedLM.from_pretrained(backbone.DEMO_DIR, attn_implementation="eager")
    encoder.bert.save_pretrained(folder)
    AutoTokenizer.from_pretrained(backbone.DEMO_DIR).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_a_headless_backbone_gets_one_cached_mlm_head_stage(headless, tmp_path, monkeypatch):
    """The MLM-head stage trains the head over the frozen encoder once; its held-out loss falls;
    another method and seed reuse it; other text or another budget train a new one."""
    demo = suites.get("demo")
    monkeypatch.setattr(
        suites, "get", lambda name: dataclasses.replace(demo, backbone=str(headless))
    )
    budget = {"max_steps": 2, "eval_every": 2, "batch_size": 8, "mlm_cap": 60, "eval_cap": 8,
              "head_steps": 40, "head_lr": 3e-3}  # fmt: skip

    def run(method, seed=0, **train):
        request = runner.Request(
            method=method, setting="multi-task", seed=seed, output=tmp_path, tasks=("pos",),
            train=budget | train, method_options={"mlm": True}, progress=False,
        )  # fmt: skip
        return runner.execute(runner.prepare(request)).metrics

    heads = tmp_path / "cache" / "stages"
    first = run("adapter")
    assert first["mlm-head/trained"] == 1 and len(list(heads.glob("mlm-head-*"))) == 1
    assert first["mlm-head/heldout_loss_after"] < first["mlm-head/heldout_loss_before"] - 0.5
    assert first["budget/stage_steps"] == 40  # the head's steps count as the run's stage budget
    again = run("lora", seed=1)
    assert again["mlm-head/trained"] == 0 and len(list(heads.glob("mlm-head-*"))) == 1
    assert again["budget/stage_steps"] == 40
    assert run("adapter", mlm_cap=50)["mlm-head/trained"] == 1  # other text
    assert run("adapter", head_steps=30)["mlm-head/trained"] == 1  # another budget
    assert len(list(heads.glob("mlm-head-*"))) == 3
    # a method without MLM needs no head: none is trained nor logged
    request = runner.Request(
        method="adapter", setting="multi-task", output=tmp_path, tasks=("pos",), train=budget,
        progress=False,
    )  # fmt: skip
    assert "mlm-head/trained" not in runner.execute(runner.prepare(request)).metrics


@pytest.mark.slow
def test_run_averaging_starts_from_the_cached_head_its_runs_froze(headless, tmp_path, monkeypatch):
    """Seeds of an MLM method on a headless backbone keep their weights without the head (frozen,
    from the stage): their average builds the same model, with the same head, and tests it."""
    demo = suites.get("demo")
    monkeypatch.setattr(
        suites, "get", lambda name: dataclasses.replace(demo, backbone=str(headless))
    )
    budget = {"max_steps": 2, "eval_every": 2, "batch_size": 8, "mlm_cap": 60, "eval_cap": 8,
              "head_steps": 4}  # fmt: skip

    def request(seed):
        return runner.Request(
            method="adapter", setting="multi-task", seed=seed, output=tmp_path, tasks=("pos",),
            train=budget, method_options={"mlm": True}, progress=False,
        )  # fmt: skip

    ids = [runner.execute(runner.prepare(request(seed))).run_id for seed in (0, 1)]
    average = averaging.average_runs(request(0), ids)
    assert average.metrics["eval/pos/avg_target"] >= 0
    kept = [load_file(str(tmp_path / "checkpoints" / i / "all.safetensors")) for i in ids]
    averaged = load_file(str(tmp_path / "checkpoints" / average.run_id / "all.safetensors"))
    assert averaged.keys() == kept[0].keys() and not any("lm_head" in k for k in averaged)
    for name, value in averaged.items():
        mean = (kept[0][name].double() + kept[1][name].double()) / 2
        torch.testing.assert_close(value.double(), mean, rtol=1e-6, atol=1e-7)
