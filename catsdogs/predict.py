"""Classify preprocessed images with a trained model behind one compiled, warmed-up function."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from catsdogs.preprocessing import prepare_image

# Bounds the memory of one model call when a caller hands over many images at once.
_MAX_CALL_BATCH = 64


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float
    probabilities: dict[str, float]


class Classifier:
    """A Keras model that takes (N, size, size, 3) uint8 RGB and returns class probabilities.

    The model is called through a tf.function with a fixed input signature: an eager call or
    model.predict per request costs several times more on CPU (see ../shared/notes/stack.md).
    """

    def __init__(
        self,
        model: keras.Model,
        class_names: Sequence[str],
        image_size: int,
        source: str,
        metadata: dict[str, Any] | None = None,
    ):
        input_shape = tuple(model.input_shape[1:])
        if input_shape != (image_size, image_size, 3):
            raise ValueError(
                f"model input shape {input_shape} does not match image_size {image_size}"
            )
        self.model = model
        self.class_names = tuple(class_names)
        self.image_size = image_size
        self.source = source
        self.metadata = dict(metadata or {})
        self._infer = tf.function(
            lambda pixels: model(pixels, training=False),
            input_signature=[tf.TensorSpec((None, image_size, image_size, 3), tf.uint8)],
        )

    def warm_up(self, batch_sizes: Sequence[int] = (1, 8, 32)) -> None:
        """Trace the function and let oneDNN build its kernels before real traffic arrives."""
        for size in batch_sizes:
            self.predict_pixels(np.zeros((size, self.image_size, self.image_size, 3), np.uint8))

    def predict_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities, shape (N, number of classes), for a uint8 batch from prepare_image."""
        if len(pixels) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        chunks = [
            self._infer(tf.convert_to_tensor(pixels[start : start + _MAX_CALL_BATCH])).numpy()
            for start in range(0, len(pixels), _MAX_CALL_BATCH)
        ]
        return np.concatenate(chunks).astype(np.float32)

    def predict_images(self, images: Sequence[bytes]) -> list[Prediction]:
        """Decode, preprocess and classify encoded images (raises InvalidImageError)."""
        pixels = np.stack([prepare_image(data, self.image_size).pixels for data in images])
        return self.to_predictions(self.predict_pixels(pixels))

    def to_predictions(self, probabilities: np.ndarray) -> list[Prediction]:
        return to_predictions(probabilities, self.class_names)


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
