"""The int8 gate's arithmetic: it passes a copy that answers like fp32 and fails one that
changes labels, loses accuracy or raises the log loss; and the minimum test split it needs."""

import numpy as np
import pytest

from catsdogs.classifier import ModelOutput
from training.quantize import MIN_GATE_PHOTOS, QuantizationGateError, check_gate


def _output(probabilities_of_dog) -> ModelOutput:
    dog = np.asarray(probabilities_of_dog, np.float32)
    return ModelOutput(np.stack([1 - dog, dog], axis=1), np.zeros((len(dog), 4), np.float32))


LABELS = np.array([0] * 200 + [1] * 200)
FP32 = _output([0.1] * 200 + [0.9] * 200)


def test_a_faithful_copy_passes_with_its_numbers():
    result = check_gate(FP32, _output([0.11] * 200 + [0.9] * 200), LABELS)
    assert result.same_label == 1.0 and result.accuracy_int8 == result.accuracy_fp32 == 1.0
    assert result.max_probability_change == pytest.approx(0.01, abs=1e-6)
    assert result.log_loss_int8 <= result.log_loss_fp32 * 1.1


@pytest.mark.parametrize(
    ("dog", "words"),
    [
        ([0.1] * 197 + [0.6] * 3 + [0.9] * 200, "same label"),  # 3 of 400 flipped: 99.25 %
        ([0.1] * 200 + [0.3] * 200, "log loss"),  # same labels, far less sure
    ],
)
def test_a_copy_that_answers_differently_fails_loudly(dog, words):
    with pytest.raises(QuantizationGateError, match=words):
        check_gate(FP32, _output(dog), LABELS)


def test_the_gate_needs_enough_photos_for_one_changed_label():
    assert MIN_GATE_PHOTOS == 200  # 1 of 200 changed is exactly the 99.5 % bar
