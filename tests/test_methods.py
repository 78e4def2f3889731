"""What each method trains, and that what it freezes stays frozen through a training step."""

import pytest
import torch

from bench import runner
from bench.data import Collator
from bench.errors import BenchError
from bench.settings import Pair


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
    data = prepared.data[(pair, "train")]
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
