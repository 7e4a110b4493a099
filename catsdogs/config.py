"""Runtime constants and limits shared by training, evaluation and serving."""

import os

from pydantic import BaseModel, ConfigDict, Field

MODEL_NAME = "catsdogs"
"""Name of the model in the BentoML store and in the MLflow model registry."""

CLASS_NAMES: tuple[str, ...] = ("cat", "dog")
"""Output order of the classifier: index i of the probability vector is CLASS_NAMES[i]."""

DEFAULT_IMAGE_SIZE = 288
"""Side of the square RGB image a model is trained at by default: above MobileNetV2's ImageNet
size, as cross-validation chose (benchmarks/CROSSVAL.md). A trained model's own size is in its
metadata, which is what serving reads."""

KERAS_FILE_NAME = "model.keras"
"""File name of the saved Keras model inside a BentoML model directory."""

ONNX_FILE_NAME = "model.onnx"
"""File name of the same model exported to ONNX, which serving runs with ONNX Runtime."""

INT8_ONNX_FILE_NAME = "model.int8.onnx"
"""File name of the int8 (statically quantized) copy of the ONNX export."""

ONNX_FILES = {"fp32": ONNX_FILE_NAME, "int8": INT8_ONNX_FILE_NAME}
"""The ONNX file of each precision a model is served at."""

MODEL_CARD_FILE = "model_card.md"
MODEL_CARD_HTML_FILE = "model_card.html"
MODEL_CARD_PLOT_FILE = "model_card_reliability.png"
"""The model card written at training time into the BentoML model (and MLflow's model_card/):
markdown, the same as a self-contained HTML page (served at /model-card), and its plot."""

ONNX_TOLERANCE = 1e-4
"""Largest allowed difference between the Keras and ONNX probabilities of one image: checked
on the test split when a model is exported, and in tests."""


def available_cores() -> int:
    """Cores this process may run on. In a container this is the node's, not the CPU limit:
    set CATSDOGS_WORKERS and CATSDOGS_THREADS there (deploy/k8s/configmap.yaml)."""
    return len(os.sched_getaffinity(0))


class ImageLimits(BaseModel):
    """What an input image may be. Checked before any pixel is decoded where possible."""

    model_config = ConfigDict(frozen=True)

    max_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Largest accepted file size.")
    # 40 MP covers any phone photo; a 10000x10000 decompression bomb (100 MP) is refused
    # from its header alone, before its pixels are allocated.
    max_pixels: int = Field(40_000_000, gt=0, description="Largest accepted width x height.")
    # Smaller than this is not a photo of an animal (icons, tracking pixels, broken thumbnails).
    min_side: int = Field(32, gt=0, description="Smallest accepted width or height.")
