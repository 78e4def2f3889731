"""Every registered method runs in every setting on the demo suite (tiny budget): the grid that
`bench compare` runs at full size."""

import pytest

from bench import params, runner
from bench.method import METHODS
from bench.settings import SETTINGS

TINY = {
    "max_steps": 2,
    "eval_every": 2,
    "batch_size": 4,
    "train_cap": 32,
    "mlm_cap": 32,
    "eval_cap": 32,
}
OPTIONS = {  # smaller parts where a method has them, so the grid stays fast
    "madx": {"lang_steps": 2, "lang_batch_size": 4},
    "hyperx": {"bottleneck": 8},
    "hyperx-small": {"bottleneck": 8},
}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """One output folder per method: MAD-X's cached language adapters serve every setting."""
    return {name: tmp_path_factory.mktemp(name) for name in METHODS.names()}


@pytest.mark.parametrize("setting", SETTINGS.names())
@pytest.mark.parametrize("method", METHODS.names())
def test_method_runs_in_setting(method, setting, outputs):
    options = OPTIONS.get(method, {})
    if setting == "zero-text" and method.startswith("hyperx"):  # its route to text-less languages
        options = {**options, "language_source": "typology"}
    request = runner.Request(
        method=method, setting=setting, output=outputs[method], progress=False,
        train={**TINY, **({"shots": 2} if setting == "few-shot" else {})},
        method_options=options,
    )  # fmt: skip
    prepared = runner.prepare(request)
    result = runner.execute(prepared)
    assert {r.role for r in result.pairs} == {"source", "target"}
    assert any(key.endswith("/avg_target") for key in result.metrics)
    assert 0 < result.metrics["params/trainable"] <= result.metrics["params/total"]
    if method == "madx":  # an adapter for each language with text (7, but 5 in zero-text)
        with_text = 7 - len(prepared.suite.no_text) * (setting == "zero-text")
        stages = result.metrics["stages/trained"] + result.metrics["stages/cached"]
        assert stages == with_text * len(prepared.plan.models)
        groups = {g.name: g.trained for g in params.count("madx", "demo", 1, 1)}
        per_language = groups["language adapters (MLM)"]
        assert result.metrics["params/stage_trained"] == with_text * per_language  # once each
