"""MLflow tracking and registry, and the BentoML model store: each points to the other."""

import importlib.metadata
import logging
import math
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
import keras
import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from catsdogs.config import KERAS_FILE_NAME
from training.data import Dataset
from training.progress import Advance

logger = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
# What the logged model needs at inference; exact pins keep `mlflow models serve` faithful
# (and skip MLflow's slow requirement inference, which loads the model in a subprocess).
MODEL_PACKAGES = ("tensorflow-cpu", "keras", "numpy")
REPORTED_PACKAGES = (
    *MODEL_PACKAGES,
    "bentoml",
    "mlflow",
    "onnxruntime",
    "pillow",
    "pydantic",
    "scikit-learn",
    "tf2onnx",
    "catsdogs",
)


class EpochMetricsLogger(keras.callbacks.Callback):
    """Logs every epoch's Keras metrics to MLflow as `<phase>_<metric>`, step = global epoch."""

    def __init__(self, phase: str, first_step: int = 0):
        super().__init__()
        self.phase = phase
        self.first_step = first_step

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        values = {f"{self.phase}_{name}": float(value) for name, value in (logs or {}).items()}
        mlflow.log_metrics(values, step=self.first_step + epoch)


class KerasProgress(keras.callbacks.Callback):
    """Moves a progress bar (training.progress) on after every epoch (fit) or batch
    (predict)."""

    def __init__(self, advance: Advance, shown: tuple[str, ...] = ("loss", "val_loss")):
        super().__init__()
        self.advance = advance
        self.shown = shown

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self.advance(**{name: float(logs[name]) for name in self.shown if name in logs})

    def on_predict_batch_end(self, batch: int, logs: dict | None = None) -> None:
        outputs = (logs or {}).get("outputs")
        self.advance(len(outputs) if outputs is not None else 1)


class LoggedMetrics(dict[str, float]):
    """Every metric of a run, as logged to MLflow (the last value of each): what the model card
    reads, so that its numbers are the run's, never computed a second time."""

    def log(self, metrics: Mapping[str, float], prefix: str = "") -> None:
        values = {f"{prefix}{name}": float(value) for name, value in metrics.items()}
        mlflow.log_metrics(values)
        self.update(values)


@dataclass(frozen=True)
class RegisteredModel:
    mlflow_version: str
    mlflow_uri: str
    bento_tag: str
    champion: bool
    champion_reason: str


def log_dataset(dataset: Dataset, reports_dir: Path, logged: LoggedMetrics) -> None:
    """The split manifest, the rejected/duplicate reports and the fingerprint, into the run."""
    paths = dataset.write_reports(reports_dir)
    manifest = pd.read_csv(paths["manifest"])
    mlflow.log_input(
        mlflow.data.from_pandas(
            manifest,
            source=str(dataset.root),
            targets="label",
            name=dataset.root.name,
            digest=dataset.fingerprint[:16],
        ),
        context="training",
    )
    for path in paths.values():
        mlflow.log_artifact(str(path), artifact_path="data")
    summary = dataset.summary()
    mlflow.set_tag("dataset_fingerprint", dataset.fingerprint)
    mlflow.log_dict(summary, "data/summary.json")
    logged.log(
        {
            "data_valid": summary["valid"],
            "data_rejected": summary["rejected"],
            "data_duplicates": summary["duplicates"],
            **{
                f"data_{split}_{label}": count
                for split, labels in dataset.counts().items()
                for label, count in labels.items()
            },
        }
    )


def log_environment() -> None:
    """Package versions and the git commit, so a run can be reproduced."""
    versions = {name: _version_of(name) for name in REPORTED_PACKAGES}
    mlflow.log_dict(versions, "environment.json")
    mlflow.set_tags({f"version.{name}": version for name, version in versions.items()})
    commit, dirty = _git_state(Path(__file__).resolve().parents[1])
    if commit:
        mlflow.set_tags({"mlflow.source.git.commit": commit, "git_dirty": str(dirty).lower()})


def register_model(
    model: keras.Model,
    *,
    files: dict[str, tuple[Path, str]],
    registered_name: str,
    example: np.ndarray,
    example_output: np.ndarray,
    metadata: dict[str, Any],
    test_metrics: dict[str, float],
    force_champion: bool,
    named_files: Callable[[str, str], dict[str, tuple[Path, str]]] | None = None,
) -> RegisteredModel:
    """Log and register the model in MLflow, save it to the BentoML store, cross-reference
    both, and move the champion alias if the new version beats the current champion.

    files: what the BentoML model holds besides model.keras ({file name: (local path, the
    MLflow artifact folder it is logged to)}): the ONNX export, the OpenWorld, ....
    named_files: more such files that name the model itself (the model card), written by
    named_files(bento_tag, mlflow_version) once both exist; saved and logged the same way."""
    run = mlflow.active_run()
    # mlflow.tensorflow, not mlflow.keras: in MLflow 3.17 the keras flavor writes the input
    # example before creating the model folder and fails (mlflow/mlflow#16183). Both flavors
    # store a Keras 3 model the same way, as data/model.keras.
    info = mlflow.tensorflow.log_model(
        model,
        name="model",
        signature=infer_signature(example, example_output),
        input_example=example,
        registered_model_name=registered_name,
        metadata=metadata,
        pip_requirements=[f"{name}=={_version_of(name)}" for name in MODEL_PACKAGES],
    )
    version = str(info.registered_model_version)
    for path, artifact_dir in files.values():
        mlflow.log_artifact(str(path), artifact_path=artifact_dir)
    mlflow_uri = f"models:/{registered_name}/{version}"

    bento_metadata = {
        **metadata,
        "test_metrics": {k: v for k, v in test_metrics.items() if _is_finite(v)},
        "mlflow_run_id": run.info.run_id,
        "mlflow_model_version": version,
        "mlflow_model_uri": mlflow_uri,
        "mlflow_tracking_uri": mlflow.get_tracking_uri(),
    }
    with bentoml.models.create(
        registered_name,
        labels={"framework": "keras", "runtime": "onnx", "mode": str(metadata.get("mode", ""))},
        metadata=bento_metadata,
    ) as bento_model:
        bento_tag = str(bento_model.tag)
        named = named_files(bento_tag, version) if named_files else {}
        for path, artifact_dir in named.values():
            mlflow.log_artifact(str(path), artifact_path=artifact_dir)
        model.save(bento_model.path_of(KERAS_FILE_NAME))
        for name, (path, _) in {**files, **named}.items():
            shutil.copyfile(path, bento_model.path_of(name))

    client = mlflow.MlflowClient()
    mlflow.set_tag("bentoml_model_tag", bento_tag)
    client.set_model_version_tag(registered_name, version, "bentoml_model_tag", bento_tag)

    champion_accuracy = _champion_accuracy(client, registered_name)
    promote, reason = decide_promotion(
        test_metrics["accuracy"], champion_accuracy, force=force_champion
    )
    if promote:
        client.set_registered_model_alias(registered_name, CHAMPION_ALIAS, version)
    mlflow.set_tags({"champion": str(promote).lower(), "champion_reason": reason})
    logger.info("model %s v%s, bento %s: %s", registered_name, version, bento_tag, reason)
    return RegisteredModel(version, mlflow_uri, bento_tag, promote, reason)


def decide_promotion(
    accuracy: float, champion_accuracy: float | None, *, force: bool
) -> tuple[bool, str]:
    """The champion alias moves only to a strictly better test accuracy, or when forced."""
    if champion_accuracy is None:
        return True, "first model: becomes champion"
    if force:
        return True, f"forced: replaces champion ({champion_accuracy:.4f}) at {accuracy:.4f}"
    if accuracy > champion_accuracy:
        return True, f"test accuracy {accuracy:.4f} beats champion's {champion_accuracy:.4f}"
    return False, f"test accuracy {accuracy:.4f} does not beat champion's {champion_accuracy:.4f}"


def _champion_accuracy(client: mlflow.MlflowClient, name: str) -> float | None:
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException:
        return None
    return client.get_run(champion.run_id).data.metrics.get("test_accuracy")


def _version_of(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git_state(directory: Path) -> tuple[str | None, bool]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=directory, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, False
    return commit, bool(status.strip())


def _is_finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
