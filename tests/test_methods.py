"""What each method trains, and that what it freezes stays frozen through a training step."""

import dataclasses
import json

import pytest
import torch
from adapters.composition import Stack
from safetensors.torch import load_file

from bench import runner
from bench.data import Collator
from bench.errors import BenchError
from bench.method import Backbone
from bench.settings import Pair
from bench.tracking import Tracker
from methods.madx import Madx


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    def make(method, **options):
        request = runner.Request(
            method=method, setting="multi-task", output=tmp_path_factory.mktemp("runs"),
            train={"max_steps": 1, "batch_size": 4}, method_options=options, progress=False,
        )  # fmt: skip
        return runner.prepare(request)

    return make


def one_step(prepared, model):
    pair = Pair("pos", prepared.suite.main_source)
    data = prepared.examples(pair, "train")
    batch = Collator(prepared.tokenizer, 0.15, 0)(data.examples([0, 1, 2, 3]), data.kind)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    model.train()
    model(batch, pair).loss.backward()
    optimizer.step()


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed(before, model):
    return {name for name, p in model.named_parameters() if not torch.equal(before[name], p)}


def test_full_ft_trains_everything(prepared):
    p = prepared("full-ft")
    model = runner.build_model(p, p.plan.models[0])
    assert all(param.requires_grad for param in model.parameters())


def test_adapter_trains_only_the_adapter_and_heads(prepared):
    p = prepared("adapter", bottleneck=16)
    model = runner.build_model(p, p.plan.models[0])
    trainable = {n for n, param in model.named_parameters() if param.requires_grad}
    assert trainable
    assert all(".adapters.shared." in n or n.startswith("heads.") for n in trainable)
    assert any(n.startswith("heads.classifiers.pos") for n in trainable)
    before = snapshot(model)
    one_step(p, model)
    moved = changed(before, model)
    assert moved and moved <= trainable
    down = next(param for n, param in model.named_parameters() if "adapter_down" in n)
    assert down.shape[0] == 16  # the bottleneck


def test_dummy_trains_only_its_heads(prepared):
    p = prepared("dummy")
    model = runner.build_model(p, p.plan.models[0])
    before = snapshot(model)
    one_step(p, model)
    assert changed(before, model) <= {
        n for n, _ in model.named_parameters() if n.startswith("heads.")
    }


def test_lora_trains_only_low_rank_updates_of_its_targets_and_heads(prepared):
    p = prepared("lora", rank=4, targets="query,value")
    model = runner.build_model(p, p.plan.models[0])
    trainable = {n for n, param in model.named_parameters() if param.requires_grad}
    lora = {n for n in trainable if ".lora_" in n}
    assert lora and trainable - lora == {n for n in trainable if n.startswith("heads.classifiers.")}
    assert all(".query." in n or ".value." in n for n in lora)
    rank = next(param for n, param in model.named_parameters() if "lora_A" in n).shape[0]
    assert rank == 4
    before = snapshot(model)
    one_step(p, model)
    moved = changed(before, model)
    assert moved and moved <= trainable


def test_lora_refuses_targets_the_backbone_lacks(prepared):
    p = prepared("lora", targets="nonexistent")
    with pytest.raises(BenchError, match=r"method\.targets='nonexistent'"):
        runner.build_model(p, p.plan.models[0])


MADX = {"task_reduction": 8, "lang_steps": 3, "lang_batch_size": 4}


@pytest.fixture(scope="module")
def madx(prepared, tmp_path_factory):
    """A MAD-X model on multi-task qaa with its language adapters trained (3 MLM steps each)."""
    p = prepared("madx", **MADX)
    plan = p.plan.models[0]
    root = tmp_path_factory.mktemp("tracking")
    tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}", "test", root / "artifacts")
    tracker.start("stages", {}, {})
    folders, trained, _ = runner.run_stages(p, plan, tracker)
    again, trained_again, _ = runner.run_stages(p, plan, tracker)
    tracker.end()
    return p, plan, folders, (trained, trained_again, again)


def test_madx_trains_language_adapters_once_per_language_and_caches_them(madx, demo):
    _, _, folders, (trained, trained_again, again) = madx
    assert set(folders) == {f"lang-{language}" for language in demo.languages}
    assert trained == len(demo.languages) and trained_again == 0 and again == folders
    key = json.loads((folders["lang-qaa"] / "stage.json").read_text())
    assert key["stage"] == "lang-qaa" and key["budget"][0] == 3
    assert (folders["lang-qaa"] / "adapter_config.json").is_file()


def test_madx_language_stage_trains_its_adapter_alone(madx, demo):
    p, plan, _, _ = madx
    stage = Madx.stages(plan, p.method_config)[0]
    backbone = Backbone("demo", runner.load_backbone("demo", "pretrained")[0], p.tokenizer, "")
    model = stage.build(backbone, {"mlm": demo.task("mlm")})
    trainable = {n for n, param in model.named_parameters() if param.requires_grad}
    assert trainable and all(".lang_qaa." in n for n in trainable)  # MLM head frozen too
    assert any("invertible_adapters.lang_qaa" in n for n in trainable)


def test_madx_trains_only_task_adapters_and_heads(madx):
    p, plan, folders, _ = madx
    model = runner.build_model(p, plan, folders)
    trainable = {n for n, param in model.named_parameters() if param.requires_grad}
    tasks = {n for n in trainable if ".task_" in n}
    assert tasks and trainable - tasks == {n for n in trainable if n.startswith("heads.")}
    languages = {n for n, _ in model.named_parameters() if ".lang_" in n}
    assert any("invertible_adapters.lang_qaa" in n for n in languages)
    assert {model.stage_of(n) for n in languages} == set(folders)
    down = next(param for n, param in model.named_parameters() if ".task_pos.adapter_down" in n)
    assert down.shape[0] == 128 // 8
    before = snapshot(model)
    one_step(p, model)
    moved = changed(before, model)
    assert moved and moved <= trainable


def test_madx_loads_the_language_adapters_its_stages_trained(madx):
    p, plan, folders, _ = madx
    model = runner.build_model(p, plan, folders)
    saved = load_file(str(folders["lang-qad"] / "adapter.safetensors"))
    weights = {n: param for n, param in model.named_parameters() if ".lang_qad." in n}
    assert len(saved) == len(weights)
    for name, tensor in saved.items():  # saved from the encoder: names without the model's prefix
        (match,) = [param for n, param in weights.items() if n.endswith(f".{name}")]
        assert torch.equal(match, tensor)


def test_madx_runs_each_pair_under_its_own_language_adapter(madx):
    p, plan, folders, _ = madx
    model = runner.build_model(p, plan, folders).eval()
    layer = model.encoder.encoder.layer[0].output.adapters
    calls = []
    for lang in ("qaa", "qad"):
        layer[f"lang_{lang}"].register_forward_hook(lambda *_, lang=lang: calls.append(lang))
    target = Pair("pos", "qad")
    assert model.setup(target) == Stack("lang_qad", "task_pos")
    data = p.examples(target, "test")
    batch = Collator(p.tokenizer, 0.15, 0)(data.examples([0, 1]), data.kind)
    model.prepare_eval(target)
    with torch.no_grad():
        logits = model(batch, target).logits
        assert calls == ["qad"]
        source = model(batch, Pair("pos", "qaa")).logits
    assert calls == ["qad", "qaa"]
    assert not torch.allclose(logits, source)


def test_madx_falls_back_for_a_language_without_text(madx):
    p, plan, folders, _ = madx
    no_text = dataclasses.replace(plan, mlm=tuple(t for t in plan.mlm if t.pair.language != "qag"))
    config = p.method_config
    Madx.check(no_text, config)  # the default fallback: the main source's adapter
    assert "lang-qag" not in {stage.name for stage in Madx.stages(no_text, config)}
    prepared = dataclasses.replace(p, plan=dataclasses.replace(p.plan, models=(no_text,)))
    prepared.stages = {no_text.name: Madx.stages(no_text, config)}
    model = runner.build_model(prepared, no_text, folders)
    assert model.setup(Pair("pos", "qag")) == Stack("lang_qaa", "task_pos")
    assert model.notes() == {"madx.no_text": "qag", "madx.fallback": "qag: lang_qaa"}
    assert model.language_notes() == {"qag": "no text: ran on lang_qaa"}  # marked in tables
    assert not any(".lang_qag." in n for n, _ in model.named_parameters())
    with pytest.raises(BenchError, match=r"qag have no unlabelled text.*missing_text"):
        Madx.check(no_text, config.with_values({"missing_text": "error"}))
    alone = dataclasses.replace(config, missing_text="none")
    prepared.method_config = alone
    model = runner.build_model(prepared, no_text, folders)
    assert model.setup(Pair("pos", "qag")) == Stack("task_pos")


def test_madx_refuses_the_mlm_option(prepared):
    with pytest.raises(BenchError, match=r"method\.mlm=true is not for madx"):
        prepared("madx", mlm=True)
