"""Hyper-X: parameter counts against the paper's, what trains, generated and cached weights."""

import pytest
import torch

from bench import params, report, runner
from bench.cli import main
from bench.data import Collator
from bench.evaluation import autocast
from bench.settings import Pair

SMALL = {"bottleneck": 16, "source_dim": 16, "embedding_dim": 8}


@pytest.mark.parametrize(("method", "millions"), [("hyperx", 76.46), ("hyperx-small", 13.11)])
def test_hypernetwork_size_on_mbert_matches_the_reference(method, millions, capsys):
    groups = {g.name: g for g in params.count(method, "mbert-base", 17, 2)}
    assert abs(groups["hypernetwork"].trained / 1e6 - millions) < 0.01
    assert groups["encoder"].trained == 0  # frozen
    assert groups["encoder LayerNorms"].trained == 25 * 2 * 768  # embeddings + 2 per layer
    assert groups["heads"].trained == (7 + 17) * 769  # WikiANN NER and UD POS heads
    # the MLM head (and its decoder, tied to the frozen word embeddings) stays frozen
    assert groups["heads LayerNorms"].trained == 0
    assert main(["params", "--method", method, "--backbone-shape", "mbert-base"]) == 0
    out = capsys.readouterr().out
    assert "hypernetwork" in out and f"{millions:.2f} M" in out
    assert "encoder LayerNorms" in out


def test_params_refuses_an_unknown_shape(capsys):
    assert main(["params", "--method", "hyperx", "--backbone-shape", "mbert-huge"]) == 2
    err = capsys.readouterr().err
    assert "mbert-huge" in err and "mbert-base" in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    request = runner.Request(
        method="hyperx", setting="mixed", output=tmp_path_factory.mktemp("runs"), progress=False,
        train={"max_steps": 2, "eval_every": 2, "mlm_cap": 200, "train_cap": 200},
        method_options=SMALL,
    )  # fmt: skip
    return runner.prepare(request)


@pytest.fixture
def model(prepared):
    torch.manual_seed(0)
    return runner.build_model(prepared, prepared.plan.models[0])


def _batch(prepared, pair, split="train", n=8):
    data = prepared.examples(pair, split)
    collator = Collator(prepared.tokenizer, 0.15, 0, torch.device("cpu"))
    return collator(data.examples(list(range(n))), data.kind)


def test_one_step_trains_only_the_hypernetwork_layernorms_and_heads(prepared, model):
    frozen = {
        name: p.detach().clone()
        for name, p in model.encoder.named_parameters()
        if not p.requires_grad
    }
    assert frozen and not any("LayerNorm" in name for name in frozen)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    pair = Pair("pos", prepared.suite.main_source)
    model.train()
    model(_batch(prepared, pair), pair).loss.backward()
    for name, parameter in model.hypernetwork.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    optimizer.step()
    for name, parameter in model.encoder.named_parameters():
        if name in frozen:
            assert torch.equal(parameter, frozen[name]), name


def test_a_bf16_step_gives_float32_gradients_close_to_fp32s(prepared, model):
    """Under bfloat16 autocast (`train.precision=bf16`) the generators' forward runs in bf16;
    their gradients, written into the kept float32 buffers, stay float32 and near fp32's."""
    pair = Pair("pos", prepared.suite.main_source)
    batch = _batch(prepared, pair)
    model.train()
    for module in model.modules():  # the same forward in both precisions, but for rounding
        if isinstance(module, torch.nn.Dropout):
            module.eval()
    grads = {}
    for precision in ("fp32", "bf16"):
        model.zero_grad(set_to_none=True)
        with autocast(precision, torch.device("cpu")):
            loss = model(batch, pair).loss
        loss.backward()  # outside autocast, as the runner's training loop does
        grads[precision] = {n: p.grad.clone() for n, p in model.hypernetwork.named_parameters()}
    for name, fp32 in grads["fp32"].items():
        bf16 = grads["bf16"][name]
        assert bf16.dtype == torch.float32, name
        assert torch.nn.functional.cosine_similarity(bf16.flatten(), fp32.flatten(), 0) > 0.95


def test_the_mlm_head_computes_in_float32_under_bf16(prepared, model):
    """A bf16 matmul over a wide vocabulary takes a slow path on the CPU (`bench.heads`): under
    bf16 autocast the encoder computes in bf16, and the MLM head in float32."""
    pair = Pair("mlm", prepared.suite.main_source)
    batch = _batch(prepared, pair)
    with autocast("bf16", torch.device("cpu")):
        output = model(batch, pair)
        assert torch.matmul(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    masked = int((batch["labels"] != -100).sum())
    assert output.logits.shape == (masked, len(prepared.tokenizer)) and masked > 0
    assert output.logits.dtype == torch.float32 and output.loss.dtype == torch.float32


def test_languages_get_different_adapters(prepared, model):
    a = model.generate(Pair("pos", "qaa"))
    b = model.generate(Pair("pos", "qad"))
    assert a.keys() == b.keys()
    assert all(not torch.equal(a[k], b[k]) for k in ("down", "up", "gain"))


def test_cached_eval_weights_equal_fresh_ones(prepared, model):
    pair = Pair("ner", "qad")  # a target: never labelled, composed from its embeddings
    batch = _batch(prepared, pair, split="test")
    model.eval()
    with torch.no_grad():
        fresh = model.generate(pair)
        uncached = model(batch, pair).logits
        model.prepare_eval(pair)
        cached_pair, cached = model._cached
        assert cached_pair == pair
        assert all(torch.equal(cached[k], fresh[k]) for k in fresh)
        assert torch.equal(model(batch, pair).logits, uncached)
    model.train()
    assert model._cached is None  # training makes cached weights stale


def test_unseen_pairs_are_evaluated(prepared):
    result = runner.execute(prepared)
    scored = {(r.task, r.language) for r in result.pairs}
    demo = prepared.suite
    # unseen languages (only MLM text) and unseen task-language combinations alike
    assert ("pos", "qad") in scored and ("nli", "qag") in scored
    assert ("pos", "qab") in scored  # qab has NER labels only
    assert ("ner", "qac") in scored  # qac has POS labels only
    assert len(scored) == len(demo.labelled_tasks) * len(demo.languages)


def test_a_language_without_labels_or_text_is_refused(tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["run", "--method", "hyperx", "--output", str(out), "--set", "method.mlm=false"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "qad" in err and "method.untrained_languages=true" in err
    assert not (out / "mlflow.db").exists()


def test_opting_in_evaluates_untrained_languages(tmp_path):
    request = runner.Request(
        method="hyperx", setting="mixed", output=tmp_path, progress=False,
        method_options={**SMALL, "mlm": False, "untrained_languages": True},
        train={"max_steps": 1, "eval_every": 1, "eval_cap": 8},
    )  # fmt: skip
    prepared = runner.prepare(request)  # no error: the user opted in
    assert prepared.method_config.untrained_languages
    result = runner.execute(prepared)
    untrained = {"qad", "qae", "qaf", "qag"}  # no labels; MLM text, but MLM is off
    why = "untrained language embedding (no labels, no MLM text)"
    assert result.notes == dict.fromkeys(sorted(untrained), why)
    table = report.results_table(result.pairs, notes=result.notes).splitlines()
    marked = {line.split()[1] for line in table if " § " in line}
    assert marked == untrained and f"§ qad: {why}" in table
