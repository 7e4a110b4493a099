"""A trained classifier behind one inference function, and the ONNX Runtime one that serves.

An inference function takes the (N, size, size, 3) uint8 RGB batch that prepare_image returns
(the model scales its input itself) and gives, in one call, the calibrated class probabilities
and the image embedding (the pooled backbone features) that the novelty detector scores.
Serving runs the ONNX export with ONNX Runtime, so it needs no TensorFlow; training wraps the
Keras model in the same Classifier (training/keras_classifier.py), and the two agree within
config.ONNX_TOLERANCE.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from catsdogs.answers import Answer, OpenWorld
from catsdogs.config import available_cores
from catsdogs.preprocessing import prepare_image

# Bounds the memory of one model call when a caller hands over many images at once.
_MAX_CALL_BATCH = 64
# The exported model's outputs, by name.
PROBABILITIES, EMBEDDING = "probabilities", "embedding"


@dataclass(frozen=True)
class ModelOutput:
    probabilities: np.ndarray  # (N, number of classes), calibrated
    embeddings: np.ndarray  # (N, embedding size)

    @classmethod
    def concatenate(cls, outputs: Sequence["ModelOutput"]) -> "ModelOutput":
        return cls(
            np.concatenate([o.probabilities for o in outputs]).astype(np.float32, copy=False),
            np.concatenate([o.embeddings for o in outputs]).astype(np.float32, copy=False),
        )


InferFn = Callable[[np.ndarray], ModelOutput]
"""uint8 (N, size, size, 3) -> the model's outputs for those N images."""


class Classifier:
    """A trained model behind one inference function, with its class names, image size and
    (for three-outcome answers) its OpenWorld: novelty detector and review threshold."""

    def __init__(
        self,
        infer: InferFn,
        class_names: Sequence[str],
        image_size: int,
        source: str,
        runtime: str,
        metadata: dict[str, Any] | None = None,
        open_world: OpenWorld | None = None,
    ):
        self._infer = infer
        self.class_names = tuple(class_names)
        self.image_size = image_size
        self.source = source
        self.runtime = runtime
        self.metadata = dict(metadata or {})
        self.open_world = open_world
        self.precision = "fp32"  # "int8" for the quantized ONNX copy

    def warm_up(self, batch_sizes: Sequence[int] = (1, 8, 32)) -> None:
        """Let the runtime build its kernels before real traffic arrives."""
        for size in batch_sizes:
            pixels = np.zeros((size, self.image_size, self.image_size, 3), np.uint8)
            if self.open_world is not None:
                self.answer_pixels(pixels)
            else:
                self.predict_pixels(pixels)

    def predict_pixels(self, pixels: np.ndarray) -> ModelOutput:
        """The model's outputs for a uint8 batch from prepare_image."""
        expected = (self.image_size, self.image_size, 3)
        if pixels.dtype != np.uint8 or pixels.shape[1:] != expected:
            raise ValueError(f"expected uint8 images of shape {expected}, got {pixels.shape}")
        if len(pixels) == 0:
            return ModelOutput(
                np.zeros((0, len(self.class_names)), np.float32), np.zeros((0, 0), np.float32)
            )
        return ModelOutput.concatenate(
            [
                self._infer(pixels[start : start + _MAX_CALL_BATCH])
                for start in range(0, len(pixels), _MAX_CALL_BATCH)
            ]
        )

    def answer_pixels(self, pixels: np.ndarray) -> list[Answer]:
        """Three-outcome answers (cat, dog, other) for a uint8 batch from prepare_image."""
        if self.open_world is None:
            raise ValueError(f"model {self.source} has no novelty detector (trained before it)")
        output = self.predict_pixels(pixels)
        return self.open_world.answer(output.probabilities, output.embeddings, self.class_names)

    def answer_images(self, images: Sequence[bytes]) -> list[Answer]:
        """Decode, preprocess and answer encoded images (raises RefusedInput)."""
        pixels = np.stack([prepare_image(data, self.image_size).pixels for data in images])
        return self.answer_pixels(pixels)


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

    def infer(pixels: np.ndarray) -> ModelOutput:
        probabilities, embeddings = session.run([PROBABILITIES, EMBEDDING], {input_name: pixels})
        return ModelOutput(probabilities, embeddings)

    return infer
