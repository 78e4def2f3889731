import re

import pytest

from bench.config import TrainConfig
from bench.errors import BenchError
from bench.method import METHODS


def test_strings_are_converted_by_field_type():
    config = TrainConfig().with_values(
        {"max_steps": "12", "temperature": "2.5", "train_cap": "none"}
    )
    assert config.max_steps == 12
    assert config.temperature == 2.5
    assert config.train_cap is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_steps": "-3"}, "train.max_steps=-3 is invalid: must be > 0"),
        ({"max_steps": "ten"}, "train.max_steps='ten' is not a valid int"),
        ({"warmup_ratio": 1.5}, "train.warmup_ratio=1.5 is invalid: must be <= 1"),
        ({"temperature": "nan"}, "train.temperature=nan must be a finite number"),
        ({"max_step": 3}, "unknown option train.max_step (did you mean train.max_steps?)"),
    ],
)
def test_invalid_train_values_name_the_value(values, message):
    with pytest.raises(BenchError, match=re.escape(message)):
        TrainConfig().with_values(values)


def test_negative_learning_rate_is_refused_for_every_method():
    for _, method in METHODS.items():
        with pytest.raises(BenchError, match=r"method.lr=-0.1 is invalid: must be > 0"):
            method.Config().with_values({"lr": "-0.1"})


def test_describe_covers_every_field():
    keys = [key for key, _, _ in TrainConfig.describe()]
    assert keys == TrainConfig.keys()
    assert all(text for _, _, text in TrainConfig.describe())
