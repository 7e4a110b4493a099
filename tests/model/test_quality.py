"""Quality bar: fast mode on the full set of real photos must reach 0.97 test accuracy."""

import pytest

from helpers import FULL_DATA_DIR
from training.config import TrainConfig
from training.train import train

MIN_TEST_ACCURACY = 0.97


@pytest.mark.slow
@pytest.mark.skipif(
    not FULL_DATA_DIR.is_dir(), reason=f"full data set not found at {FULL_DATA_DIR}"
)
def test_fast_mode_on_full_data_reaches_the_accuracy_bar():
    result = train(
        TrainConfig(
            data_dir=FULL_DATA_DIR,
            mode="fast",
            experiment="tests-quality",
            registered_model="catsdogs-quality",
        )
    )
    assert result.test_metrics["count"] >= 250  # the test split of ~3,000 photos
    assert result.test_metrics["accuracy"] >= MIN_TEST_ACCURACY, result.test_metrics
