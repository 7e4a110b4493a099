"""The classifier: one compiled trace for Keras, the same numbers from every runtime."""

import keras
import numpy as np
import pytest

from catsdogs.classifier import Classifier, onnx_infer, to_predictions
from catsdogs.config import ONNX_TOLERANCE
from training.export import export_onnx
from training.keras_classifier import keras_infer


def _tiny_model(size: int) -> keras.Model:
    inputs = keras.Input((size, size, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(keras.ops.cast(inputs, "float32"))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))


def test_warm_up_traces_once_and_every_batch_size_reuses_it():
    model = _tiny_model(32)
    infer = keras_infer(model, 32)
    classifier = Classifier(infer, ("cat", "dog"), 32, "test", runtime="keras")
    classifier.warm_up((1, 8))
    assert infer.function.experimental_get_tracing_count() == 1

    rng = np.random.default_rng(0)
    for size in (1, 3, 64, 70):  # 70 is split into calls of 64 and 6
        pixels = rng.integers(0, 256, (size, 32, 32, 3), dtype=np.uint8)
        probabilities = classifier.predict_pixels(pixels)
        assert probabilities.shape == (size, 2)
        np.testing.assert_allclose(probabilities, model.predict(pixels, verbose=0), atol=1e-6)
    assert infer.function.experimental_get_tracing_count() == 1  # no retracing


def test_onnx_export_gives_the_keras_probabilities(tmp_path):
    model = _tiny_model(32)
    # The augmentation block is left out of the export (identity at inference anyway).
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    augmented = keras.Sequential([keras.layers.RandomFlip(seed=1)], name="augmentation")
    with_augmentation = keras.Model(inputs, model(augmented(keras.ops.cast(inputs, "float32"))))
    path = export_onnx(with_augmentation, tmp_path / "model.onnx", 32)
    pixels = np.random.default_rng(1).integers(0, 256, (70, 32, 32, 3), dtype=np.uint8)
    onnx = Classifier(onnx_infer(path), ("cat", "dog"), 32, "test", runtime="onnx")
    expected = model.predict(pixels, verbose=0)
    assert np.max(np.abs(onnx.predict_pixels(pixels) - expected)) <= ONNX_TOLERANCE


def test_input_size_must_match_the_model():
    with pytest.raises(ValueError, match="does not match image_size"):
        keras_infer(_tiny_model(32), 64)
    classifier = Classifier(keras_infer(_tiny_model(32), 32), ("cat", "dog"), 32, "t", "keras")
    with pytest.raises(ValueError, match="expected uint8 images of shape"):
        classifier.predict_pixels(np.zeros((1, 64, 64, 3), np.uint8))


def test_predictions_name_the_most_probable_label():
    [cat, dog] = to_predictions(np.array([[0.9, 0.1], [0.3, 0.7]]), ("cat", "dog"))
    assert (cat.label, cat.confidence) == ("cat", pytest.approx(0.9))
    assert (dog.label, dog.confidence) == ("dog", pytest.approx(0.7))
    assert dog.probabilities == {"cat": pytest.approx(0.3), "dog": pytest.approx(0.7)}
