"""Shared fixtures. Every store the tests write to lives in one temporary folder: the tests
never touch the user's ~/bentoml, ./mlflow.db or ./mlruns. Shared helpers: helpers.py."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from helpers import FULL_DATA_DIR, SAMPLE_DIR, run_bentoml_serve

_STATE = Path(tempfile.mkdtemp(prefix="catsdogs-tests-"))
os.environ["BENTOML_HOME"] = str(_STATE / "bentoml")
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_STATE}/mlflow.db"
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session", autouse=True)
def isolated_state():
    """Run the session inside the temporary folder (MLflow puts artifacts in ./mlruns)."""
    previous = Path.cwd()
    os.chdir(_STATE)
    yield _STATE
    os.chdir(previous)
    shutil.rmtree(_STATE, ignore_errors=True)


@pytest.fixture(scope="session")
def trained_model():
    """A real model: fast mode on the committed sample of real photos, tracked and registered
    as `catsdogs` in the test session's MLflow and BentoML stores."""
    from training.config import TrainConfig
    from training.train import train

    return train(TrainConfig(data_dir=SAMPLE_DIR, mode="fast", experiment="tests"))


@pytest.fixture(scope="session")
def full_model():
    """The default model on the full set of real photos: what `catsdogs train
    ../shared/datasets/catsdogs` makes (minutes). Skips where that folder does not exist."""
    if not FULL_DATA_DIR.is_dir():
        pytest.skip(f"full data set not found at {FULL_DATA_DIR}")
    from training.config import TrainConfig
    from training.train import train

    config = TrainConfig(data_dir=FULL_DATA_DIR, experiment="tests-full",
                         registered_model="catsdogs-full")  # fmt: skip
    return train(config)


@pytest.fixture(scope="session")
def full_server(full_model, tmp_path_factory):
    """`bentoml serve` of the default full-data model (one worker, batches up to 32 files)."""
    with run_bentoml_serve(
        "service:CatsDogs",
        tmp_path_factory.mktemp("full-server"),
        full_model.registered.bento_tag,
        CATSDOGS_MAX_FILES="32",
    ) as running:
        yield running


@pytest.fixture(scope="session")
def server(trained_model, tmp_path_factory):
    """The project's service.py serving the session's trained model (2 HTTP workers, so the
    metrics tests see values from more than one process)."""
    with run_bentoml_serve(
        "service:CatsDogs",
        tmp_path_factory.mktemp("server"),
        trained_model.registered.bento_tag,
        CATSDOGS_WORKERS="2",
    ) as running:
        yield running
