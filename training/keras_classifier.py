"""The trained Keras model as a Classifier, and the CLI's model loader.

Serving runs the ONNX export (catsdogs/model_loader.py). Training, `catsdogs evaluate` and
`catsdogs predict` can also run the Keras model itself, from the BentoML store (`model.keras`)
or from an MLflow model URI; that needs TensorFlow, so it lives here, outside the Bento.
"""

from pathlib import Path
from typing import Any

from catsdogs.classifier import EMBEDDING, PROBABILITIES, Classifier, InferFn, ModelOutput
from catsdogs.config import KERAS_FILE_NAME, MODEL_NAME
from catsdogs.model_loader import (
    DEFAULT_PRECISION,
    checked_metadata,
    classifier_from_metadata,
    load_bento_classifier,
    load_open_world,
)
from training.config import Precision, Runtime

# Where a training run logs the model's OpenWorld files (catsdogs/answers.py) in MLflow.
OPEN_WORLD_ARTIFACTS = "open_world"

MLFLOW_URI_SCHEMES = ("models:/", "runs:/", "file:", "mlflow-artifacts:", "s3:", "gs:")


def load_classifier(
    reference: str = f"{MODEL_NAME}:latest",
    runtime: Runtime | None = None,
    precision: Precision = DEFAULT_PRECISION,
) -> Classifier:
    """A BentoML tag (`catsdogs:latest`; ONNX Runtime at `precision`, as the service runs it,
    unless runtime is "keras") or an MLflow URI (`models:/catsdogs@champion`; Keras only:
    MLflow holds the Keras model)."""
    if reference.startswith(MLFLOW_URI_SCHEMES):
        if runtime not in (None, "keras"):
            raise ValueError(f"MLflow models run with Keras only, not {runtime}")
        return load_mlflow_classifier(reference)
    if runtime == "keras":
        return load_bento_keras_classifier(reference)
    return load_bento_classifier(reference, precision=precision)


def load_bento_keras_classifier(tag: str) -> Classifier:
    import bentoml
    import keras

    bento_model = bentoml.models.get(tag)
    metadata = checked_metadata(dict(bento_model.info.metadata), str(bento_model.tag))
    model = keras.models.load_model(bento_model.path_of(KERAS_FILE_NAME), compile=False)
    infer = keras_infer(model, int(metadata["image_size"]))
    open_world = load_open_world(Path(bento_model.path_of("")))
    return classifier_from_metadata(infer, metadata, str(bento_model.tag), "keras", open_world)


def load_mlflow_classifier(uri: str) -> Classifier:
    import mlflow

    model = mlflow.tensorflow.load_model(uri, keras_model_kwargs={"compile": False})
    info = mlflow.models.get_model_info(uri)
    metadata = checked_metadata(info.metadata or {}, uri)
    infer = keras_infer(model, int(metadata["image_size"]))
    return classifier_from_metadata(infer, metadata, uri, "keras", load_mlflow_open_world(info))


def load_mlflow_open_world(info):
    """The OpenWorld logged with an MLflow model's run, if the run logged one."""
    import mlflow

    try:
        folder = mlflow.artifacts.download_artifacts(
            run_id=info.run_id, artifact_path=OPEN_WORLD_ARTIFACTS
        )
    except mlflow.exceptions.MlflowException:
        return None
    return load_open_world(Path(folder))


def keras_infer(model: Any, image_size: int) -> InferFn:
    """A Keras model called through a tf.function with a fixed input signature: an eager call
    or model.predict per batch costs several times more on CPU."""
    import tensorflow as tf

    input_shape = tuple(model.input_shape[1:])
    if input_shape != (image_size, image_size, 3):
        raise ValueError(f"model input shape {input_shape} does not match image_size {image_size}")
    function = tf.function(
        lambda pixels: model(pixels, training=False),
        input_signature=[tf.TensorSpec((None, image_size, image_size, 3), tf.uint8)],
    )

    def infer(pixels) -> ModelOutput:
        outputs = function(tf.convert_to_tensor(pixels))
        return ModelOutput(outputs[PROBABILITIES].numpy(), outputs[EMBEDDING].numpy())

    infer.function = function  # for tests: one trace serves every batch size
    return infer
