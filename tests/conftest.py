"""Shared fixtures. Every store the tests write to lives in one temporary folder: the tests
never touch the user's ~/bentoml, ./mlflow.db or ./mlruns."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "data" / "sample"
# The full set of real photos (3,086) beside the project; CI has it too.
FULL_DATA_DIR = Path(
    os.environ.get("CATSDOGS_FULL_DATA", ROOT.parent / "shared" / "datasets" / "catsdogs")
)

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
def sample_images() -> list[Path]:
    return sorted(SAMPLE_DIR.glob("*/*.jpg"))
