"""Export the trained inference model to ONNX for serving, and prove the export computes the
same: the same calibrated probabilities and the same embedding on the test photos.

Training stays in Keras; serving runs the exported graph with ONNX Runtime (faster on CPU,
and no TensorFlow in the serving image).
"""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from catsdogs.classifier import ModelOutput, onnx_infer
from catsdogs.config import ONNX_TOLERANCE

# The embedding is pooled activations of order 1; the novelty score is a cosine distance, so
# a difference this small does not move a score measurably.
EMBEDDING_TOLERANCE = 1e-3


class ExportMismatchError(RuntimeError):
    """The ONNX export computes something else than the Keras model."""


def export_onnx(model: keras.Model, path: Path, image_size: int) -> Path:
    """Write the inference model to path as ONNX: uint8 images in; "probabilities" and
    "embedding" out (training/architectures.py::build_inference_model)."""
    signature = [tf.TensorSpec((None, image_size, image_size, 3), tf.uint8, name="image")]
    path.parent.mkdir(parents=True, exist_ok=True)
    model.export(str(path), format="onnx", input_signature=signature, verbose=False)
    return path


def check_onnx_parity(
    expected: ModelOutput, onnx_path: Path, pixels: np.ndarray, tolerance: float = ONNX_TOLERANCE
) -> float:
    """Largest absolute difference between the Keras model's probabilities for pixels
    (expected) and the ONNX export's; raises ExportMismatchError above tolerance, or when the
    embeddings differ beyond EMBEDDING_TOLERANCE."""
    actual = onnx_infer(onnx_path)(pixels)
    if not len(pixels):
        return 0.0
    difference = float(np.max(np.abs(expected.probabilities - actual.probabilities)))
    embedding_difference = float(np.max(np.abs(expected.embeddings - actual.embeddings)))
    if not difference <= tolerance:
        raise ExportMismatchError(
            f"the ONNX export's probabilities differ from the Keras model's by "
            f"{difference:.3g} (tolerance {tolerance:g}) on {len(pixels)} images"
        )
    if not embedding_difference <= EMBEDDING_TOLERANCE:
        raise ExportMismatchError(
            f"the ONNX export's embeddings differ from the Keras model's by "
            f"{embedding_difference:.3g} (tolerance {EMBEDDING_TOLERANCE:g})"
        )
    return difference
