"""The compiled classifier: one trace, reused for every batch size, same numbers as Keras."""

import keras
import numpy as np
import pytest

from catsdogs.predict import Classifier, to_predictions


def _tiny_model(size: int) -> keras.Model:
    inputs = keras.Input((size, size, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(keras.ops.cast(inputs, "float32"))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))


def test_warm_up_traces_once_and_every_batch_size_reuses_it():
    model = _tiny_model(32)
    classifier = Classifier(model, ("cat", "dog"), 32, "test")
    classifier.warm_up((1, 8))
    assert classifier._infer.experimental_get_tracing_count() == 1

    rng = np.random.default_rng(0)
    for size in (1, 3, 64, 70):  # 70 is split into calls of 64 and 6
        pixels = rng.integers(0, 256, (size, 32, 32, 3), dtype=np.uint8)
        probabilities = classifier.predict_pixels(pixels)
        assert probabilities.shape == (size, 2)
        np.testing.assert_allclose(probabilities, model.predict(pixels, verbose=0), atol=1e-6)
    assert classifier._infer.experimental_get_tracing_count() == 1  # no retracing


def test_input_size_must_match_the_model():
    with pytest.raises(ValueError, match="does not match image_size"):
        Classifier(_tiny_model(32), ("cat", "dog"), 64, "test")


def test_predictions_name_the_most_probable_label():
    [cat, dog] = to_predictions(np.array([[0.9, 0.1], [0.3, 0.7]]), ("cat", "dog"))
    assert (cat.label, cat.confidence) == ("cat", pytest.approx(0.9))
    assert (dog.label, dog.confidence) == ("dog", pytest.approx(0.7))
    assert dog.probabilities == {"cat": pytest.approx(0.3), "dog": pytest.approx(0.7)}
