"""Export a trained Keras model to ONNX for serving, and prove the export computes the same.

Training stays in Keras; serving runs the exported graph with ONNX Runtime (faster on CPU,
and no TensorFlow in the serving image).
"""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from catsdogs.classifier import onnx_infer
from catsdogs.config import ONNX_TOLERANCE

# training/architectures.py's name for the random-augmentation block.
AUGMENTATION_LAYER = "augmentation"


class ExportMismatchError(RuntimeError):
    """The ONNX export's probabilities differ from the Keras model's beyond ONNX_TOLERANCE."""


class _PassThrough(keras.layers.Layer):
    """Stands in for the augmentation block in the inference graph (it is identity there)."""

    def call(self, inputs, **_):
        return inputs


def export_onnx(model: keras.Model, path: Path, image_size: int) -> Path:
    """Write the model's inference graph to path as ONNX (uint8 images in, probabilities out).

    Keras 3's random augmentation layers keep their random ops in the traced graph even at
    inference, and ONNX has no equivalent for them, so the export uses a copy of the model
    without that block (a clone sharing the trained weights).
    """

    def without_augmentation(layer: keras.layers.Layer) -> keras.layers.Layer:
        return _PassThrough(name=layer.name) if layer.name == AUGMENTATION_LAYER else layer

    inference_model = keras.models.clone_model(model, clone_function=without_augmentation)
    signature = [tf.TensorSpec((None, image_size, image_size, 3), tf.uint8, name="image")]
    path.parent.mkdir(parents=True, exist_ok=True)
    inference_model.export(str(path), format="onnx", input_signature=signature, verbose=False)
    return path


def check_onnx_parity(
    expected: np.ndarray, onnx_path: Path, pixels: np.ndarray, tolerance: float = ONNX_TOLERANCE
) -> float:
    """Largest absolute difference between the Keras model's probabilities for pixels
    (expected) and the ONNX export's; raises ExportMismatchError above tolerance."""
    actual = onnx_infer(onnx_path)(pixels)
    difference = float(np.max(np.abs(expected - actual))) if len(pixels) else 0.0
    if not difference <= tolerance:
        raise ExportMismatchError(
            f"the ONNX export differs from the Keras model by {difference:.3g} "
            f"(tolerance {tolerance:g}) on {len(pixels)} images"
        )
    return difference
