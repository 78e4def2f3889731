import os

# Tests never reach the Hugging Face hub: everything they load is on disk.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.pop("MLFLOW_TRACKING_URI", None)
# pytest-xdist runs one worker per core: one thread each (and in the runs they start), or the
# workers' thread pools fight over the same cores
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

import pytest
import torch

from bench import plugins

plugins.load_builtins()
if "PYTEST_XDIST_WORKER" in os.environ:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def demo():
    from bench.suites import SUITES

    return SUITES.get("demo")()


@pytest.fixture(autouse=True, scope="module")
def _no_tracking_uri_from_other_modules():
    # mlflow.set_tracking_uri (used to read runs back) also sets MLFLOW_TRACKING_URI, which every
    # later run would follow (resolve_uri honours it, as it should for users)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)
