"""A trained classifier behind one inference function, and the ONNX Runtime one that serves.

An inference function takes the (N, size, size, 3) uint8 RGB batch that prepare_image returns
(the model scales its input itself) and gives class probabilities. Serving runs the ONNX export
with ONNX Runtime, so it needs no TensorFlow; training wraps the Keras model in the same
Classifier (training/keras_classifier.py), and the two agree within config.ONNX_TOLERANCE.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from catsdogs.config import available_cores
from catsdogs.preprocessing import prepare_image

# Bounds the memory of one model call when a caller hands over many images at once.
_MAX_CALL_BATCH = 64

InferFn = Callable[[np.ndarray], np.ndarray]
"""uint8 (N, size, size, 3) -> float32 (N, number of classes) probabilities."""


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float
    probabilities: dict[str, float]


class Classifier:
    """A trained model behind one inference function, with its class names and image size."""

    def __init__(
        self,
        infer: InferFn,
        class_names: Sequence[str],
        image_size: int,
        source: str,
        runtime: str,
        metadata: dict[str, Any] | None = None,
    ):
        self._infer = infer
        self.class_names = tuple(class_names)
        self.image_size = image_size
        self.source = source
        self.runtime = runtime
        self.metadata = dict(metadata or {})

    def warm_up(self, batch_sizes: Sequence[int] = (1, 8, 32)) -> None:
        """Let the runtime build its kernels before real traffic arrives."""
        for size in batch_sizes:
            self.predict_pixels(np.zeros((size, self.image_size, self.image_size, 3), np.uint8))

    def predict_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities, shape (N, number of classes), for a uint8 batch from prepare_image."""
        if len(pixels) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        expected = (self.image_size, self.image_size, 3)
        if pixels.dtype != np.uint8 or pixels.shape[1:] != expected:
            raise ValueError(f"expected uint8 images of shape {expected}, got {pixels.shape}")
        chunks = [
            self._infer(pixels[start : start + _MAX_CALL_BATCH])
            for start in range(0, len(pixels), _MAX_CALL_BATCH)
        ]
        return np.concatenate(chunks).astype(np.float32, copy=False)

    def predict_images(self, images: Sequence[bytes]) -> list[Prediction]:
        """Decode, preprocess and classify encoded images (raises RefusedInput)."""
        pixels = np.stack([prepare_image(data, self.image_size).pixels for data in images])
        return self.to_predictions(self.predict_pixels(pixels))

    def to_predictions(self, probabilities: np.ndarray) -> list[Prediction]:
        return to_predictions(probabilities, self.class_names)


def onnx_infer(path: Path, threads: int | None = None) -> InferFn:
    """An ONNX Runtime session for an exported model, as an inference function.

    threads: intra-op threads for one model call (default: all cores this process may use).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or available_cores()
    # One call at a time per session: no inter-op pool to compete with the call's own threads.
    options.inter_op_num_threads = 1
    # Idle intra-op threads sleep instead of spinning: in a server, the CPU they would burn
    # between calls is what decoding and the HTTP handling need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    [model_input] = session.get_inputs()
    input_name = model_input.name

    def infer(pixels: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: pixels})[0]

    return infer


def to_predictions(probabilities: np.ndarray, class_names: Sequence[str]) -> list[Prediction]:
    """One Prediction per row of an (N, number of classes) probability array."""
    predictions = []
    for row in probabilities:
        best = int(np.argmax(row))
        predictions.append(
            Prediction(
                label=class_names[best],
                confidence=float(row[best]),
                probabilities={name: float(p) for name, p in zip(class_names, row, strict=True)},
            )
        )
    return predictions
