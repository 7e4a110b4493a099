"""Load a trained classifier from the BentoML model store or from an MLflow model URI.

Class names and image size come from the model's own metadata, written once at training time.
"""

from typing import Any

import keras

from catsdogs.config import KERAS_FILE_NAME, MODEL_NAME
from catsdogs.predict import Classifier

MLFLOW_URI_SCHEMES = ("models:/", "runs:/", "file:", "mlflow-artifacts:", "s3:", "gs:")


def load_classifier(reference: str = f"{MODEL_NAME}:latest") -> Classifier:
    """A BentoML tag (`catsdogs:latest`, `catsdogs:abc123`) or an MLflow URI (`models:/...`)."""
    if reference.startswith(MLFLOW_URI_SCHEMES):
        return load_mlflow_classifier(reference)
    return load_bento_classifier(reference)


def load_bento_classifier(tag: str = f"{MODEL_NAME}:latest") -> Classifier:
    import bentoml

    return classifier_from_bento_model(bentoml.models.get(tag))


def classifier_from_bento_model(bento_model: Any) -> Classifier:
    """Classifier for a bentoml Model (from the store or a BentoModel reference in a service)."""
    model = keras.models.load_model(bento_model.path_of(KERAS_FILE_NAME), compile=False)
    return _to_classifier(model, dict(bento_model.info.metadata), str(bento_model.tag))


def load_mlflow_classifier(uri: str) -> Classifier:
    # mlflow is a training-side dependency: imported only when an MLflow URI is asked for.
    import mlflow

    model = mlflow.tensorflow.load_model(uri, keras_model_kwargs={"compile": False})
    metadata = mlflow.models.get_model_info(uri).metadata or {}
    return _to_classifier(model, metadata, uri)


def _to_classifier(model: keras.Model, metadata: dict[str, Any], source: str) -> Classifier:
    missing = {"class_names", "image_size"} - metadata.keys()
    if missing:
        raise ValueError(f"model {source} has no {sorted(missing)} in its metadata")
    return Classifier(
        model,
        class_names=metadata["class_names"],
        image_size=int(metadata["image_size"]),
        source=source,
        metadata=metadata,
    )
