"""Load a trained classifier from the BentoML model store, run by ONNX Runtime (as served).

Class names and image size come from the model's own metadata, written once at training time.
Running the Keras model instead, or a model from MLflow, is training-side:
training/keras_classifier.py.
"""

import logging
from pathlib import Path
from typing import Any

from catsdogs.answers import OpenWorld
from catsdogs.classifier import Classifier, onnx_infer
from catsdogs.config import MODEL_NAME, ONNX_FILES

DEFAULT_PRECISION = "int8"
logger = logging.getLogger("catsdogs.model_loader")


def load_bento_classifier(
    tag: str = f"{MODEL_NAME}:latest", threads: int | None = None, precision: str = "fp32"
) -> Classifier:
    """The ONNX export of a model in the BentoML store (`catsdogs:latest`, `catsdogs:abc123`)
    at a precision (fp32, or its int8 copy)."""
    import bentoml

    return classifier_from_bento_model(bentoml.models.get(tag), threads, precision)


def classifier_from_bento_model(
    bento_model: Any, threads: int | None = None, precision: str = "fp32"
) -> Classifier:
    """Classifier for a bentoml Model (from the store or a BentoModel reference in a service)."""
    if precision not in ONNX_FILES:
        raise ValueError(f"precision must be one of {sorted(ONNX_FILES)}, not {precision!r}")
    metadata = checked_metadata(dict(bento_model.info.metadata), str(bento_model.tag))
    if served_precision(bento_model, precision) != precision:
        reason = metadata["int8_gate"]["skipped"]
        logger.warning("model %s has no int8 copy (%s): serving fp32", bento_model.tag, reason)
        precision = "fp32"
    path = Path(bento_model.path_of(ONNX_FILES[precision]))
    if not path.is_file():
        raise FileNotFoundError(
            f"model {bento_model.tag} has no {ONNX_FILES[precision]} ({precision}): it was "
            f"trained before that export existed; retrain it, or choose another precision "
            f"(CATSDOGS_PRECISION, --precision)"
        )
    infer = onnx_infer(path, threads)
    open_world = load_open_world(Path(bento_model.path_of("")), precision)
    classifier = classifier_from_metadata(infer, metadata, str(bento_model.tag), "onnx", open_world)
    classifier.precision = precision
    return classifier


def served_precision(bento_model: Any, precision: str) -> str:
    """The precision a model runs at when precision is asked for: fp32 when int8 is asked for
    but training made no int8 copy (too few test photos to gate one, as in the sample)."""
    skipped = bento_model.info.metadata.get("int8_gate", {}).get("skipped")
    return "fp32" if precision == "int8" and skipped else precision


def load_open_world(folder: Path, precision: str = "fp32") -> OpenWorld | None:
    """The model's novelty detector and review threshold, if it was trained with them."""
    if not (folder / f"open_world_{precision}.npz").is_file():
        return None
    return OpenWorld.load(folder, precision)


def checked_metadata(metadata: dict[str, Any], source: str) -> dict[str, Any]:
    missing = {"class_names", "image_size"} - metadata.keys()
    if missing:
        raise ValueError(f"model {source} has no {sorted(missing)} in its metadata")
    return metadata


def classifier_from_metadata(
    infer, metadata: dict[str, Any], source: str, runtime: str, open_world: OpenWorld | None
) -> Classifier:
    return Classifier(
        infer,
        class_names=metadata["class_names"],
        image_size=int(metadata["image_size"]),
        source=source,
        runtime=runtime,
        metadata=metadata,
        open_world=open_world,
    )
