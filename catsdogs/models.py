"""Load a trained classifier from the BentoML model store or from an MLflow model URI.

Class names and image size come from the model's own metadata, written once at training time.
A BentoML model holds the Keras model and its ONNX export; an MLflow model, the Keras model.
"""

from pathlib import Path
from typing import Any

from catsdogs.config import KERAS_FILE_NAME, MODEL_NAME, ONNX_FILE_NAME, RUNTIMES
from catsdogs.predict import Classifier, keras_infer, onnx_infer

MLFLOW_URI_SCHEMES = ("models:/", "runs:/", "file:", "mlflow-artifacts:", "s3:", "gs:")


def load_classifier(reference: str = f"{MODEL_NAME}:latest", runtime: str | None = None):
    """A BentoML tag (`catsdogs:latest`, `catsdogs:abc123`; runs with ONNX Runtime unless
    runtime="keras") or an MLflow URI (`models:/...`; Keras only)."""
    if reference.startswith(MLFLOW_URI_SCHEMES):
        if runtime not in (None, "keras"):
            raise ValueError(f"MLflow models run with Keras only, not {runtime}")
        return load_mlflow_classifier(reference)
    return load_bento_classifier(reference, runtime or "onnx")


def load_bento_classifier(tag: str = f"{MODEL_NAME}:latest", runtime: str = "onnx") -> Classifier:
    import bentoml

    return classifier_from_bento_model(bentoml.models.get(tag), runtime)


def classifier_from_bento_model(
    bento_model: Any, runtime: str = "onnx", threads: int | None = None
) -> Classifier:
    """Classifier for a bentoml Model (from the store or a BentoModel reference in a service)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")
    metadata = _checked_metadata(dict(bento_model.info.metadata), str(bento_model.tag))
    image_size = int(metadata["image_size"])
    if runtime == "onnx":
        path = Path(bento_model.path_of(ONNX_FILE_NAME))
        if not path.is_file():
            raise FileNotFoundError(
                f"model {bento_model.tag} has no {ONNX_FILE_NAME} (trained before ONNX export "
                f"was added): retrain it, or run it with the keras runtime"
            )
        infer = onnx_infer(path, threads)
    else:
        import keras

        model = keras.models.load_model(bento_model.path_of(KERAS_FILE_NAME), compile=False)
        infer = keras_infer(model, image_size)
    return _to_classifier(infer, metadata, str(bento_model.tag), runtime)


def load_mlflow_classifier(uri: str) -> Classifier:
    # mlflow is a training-side dependency: imported only when an MLflow URI is asked for.
    import mlflow

    model = mlflow.tensorflow.load_model(uri, keras_model_kwargs={"compile": False})
    metadata = _checked_metadata(mlflow.models.get_model_info(uri).metadata or {}, uri)
    return _to_classifier(keras_infer(model, int(metadata["image_size"])), metadata, uri, "keras")


def _checked_metadata(metadata: dict[str, Any], source: str) -> dict[str, Any]:
    missing = {"class_names", "image_size"} - metadata.keys()
    if missing:
        raise ValueError(f"model {source} has no {sorted(missing)} in its metadata")
    return metadata


def _to_classifier(infer, metadata: dict[str, Any], source: str, runtime: str) -> Classifier:
    return Classifier(
        infer,
        class_names=metadata["class_names"],
        image_size=int(metadata["image_size"]),
        source=source,
        runtime=runtime,
        metadata=metadata,
    )
