"""The classifier: one compiled trace for Keras, the same outputs from every runtime, and the
inference model built from the training parts (calibrated probabilities and the embedding)."""

import keras
import numpy as np
import pytest

from catsdogs.classifier import Classifier, onnx_infer
from catsdogs.config import ONNX_TOLERANCE
from training.architectures import ModelParts, build_inference_model
from training.calibration import calibrated
from training.export import check_onnx_parity, export_onnx
from training.keras_classifier import keras_infer


def _tiny_parts(size: int) -> ModelParts:
    inputs = keras.Input((size, size, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    backbone = keras.Model(inputs, pooled)
    head = keras.Sequential([keras.layers.Dense(2, name="logits")])
    return ModelParts(backbone, head, 1 / 255, 0.0, frozen_batch_norm=True)


def _pixels(count: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def test_warm_up_traces_once_and_every_batch_size_reuses_it():
    model = build_inference_model(_tiny_parts(32), 32, temperature=1.0)
    infer = keras_infer(model, 32)
    classifier = Classifier(infer, ("cat", "dog"), 32, "test", runtime="keras")
    classifier.warm_up((1, 8))
    assert infer.function.experimental_get_tracing_count() == 1

    for size in (1, 3, 64, 70):  # 70 is split into calls of 64 and 6
        pixels = _pixels(size)
        output = classifier.predict_pixels(pixels)
        assert output.probabilities.shape == (size, 2) and output.embeddings.shape == (size, 4)
        expected = model.predict(pixels, verbose=0)
        np.testing.assert_allclose(output.probabilities, expected["probabilities"], atol=1e-6)
        np.testing.assert_allclose(output.embeddings, expected["embedding"], atol=1e-5)
    assert infer.function.experimental_get_tracing_count() == 1  # no retracing


def test_the_inference_model_applies_the_temperature_to_the_head_logits():
    parts = _tiny_parts(32)
    pixels = _pixels(16)
    embeddings = parts.backbone(pixels.astype("float32") / 255).numpy()
    logits = parts.head(embeddings).numpy()
    for temperature in (1.0, 2.5):
        outputs = build_inference_model(parts, 32, temperature).predict(pixels, verbose=0)
        np.testing.assert_allclose(outputs["embedding"], embeddings, atol=1e-5)
        np.testing.assert_allclose(outputs["probabilities"], calibrated(logits, temperature),
                                   atol=1e-5)  # fmt: skip


def test_onnx_export_gives_the_keras_outputs(tmp_path):
    model = build_inference_model(_tiny_parts(32), 32, temperature=1.7)
    path = export_onnx(model, tmp_path / "model.onnx", 32)
    pixels = _pixels(70, seed=1)
    keras_output = Classifier(keras_infer(model, 32), ("cat", "dog"), 32, "t", "keras")
    expected = keras_output.predict_pixels(pixels)
    onnx = Classifier(onnx_infer(path), ("cat", "dog"), 32, "test", runtime="onnx")
    actual = onnx.predict_pixels(pixels)
    assert np.max(np.abs(actual.probabilities - expected.probabilities)) <= ONNX_TOLERANCE
    assert np.max(np.abs(actual.embeddings - expected.embeddings)) <= 1e-4
    assert check_onnx_parity(expected, path, pixels) <= ONNX_TOLERANCE


def test_input_size_must_match_the_model():
    model = build_inference_model(_tiny_parts(32), 32, temperature=1.0)
    with pytest.raises(ValueError, match="does not match image_size"):
        keras_infer(model, 64)
    classifier = Classifier(keras_infer(model, 32), ("cat", "dog"), 32, "t", "keras")
    with pytest.raises(ValueError, match="expected uint8 images of shape"):
        classifier.predict_pixels(np.zeros((1, 64, 64, 3), np.uint8))


def test_answers_need_a_novelty_detector():
    model = build_inference_model(_tiny_parts(32), 32, temperature=1.0)
    classifier = Classifier(keras_infer(model, 32), ("cat", "dog"), 32, "old", "keras")
    with pytest.raises(ValueError, match="no novelty detector"):
        classifier.answer_pixels(_pixels(1))
