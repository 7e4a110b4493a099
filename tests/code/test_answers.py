"""Open-world answers: novelty scores and thresholds, the three outcomes and needs_review,
the review threshold, temperature scaling and the calibration error, on small arrays."""

import numpy as np
import pytest

from catsdogs.answers import OTHER, OpenWorld, Projection, review_threshold_for
from catsdogs.novelty import KnnNovelty, MahalanobisNovelty, threshold_for
from training.calibration import (
    calibrated,
    expected_calibration_error,
    fit_temperature,
    log_loss,
)

CLASSES = ("cat", "dog")


def _clusters(rng, count: int, dims: int = 32):
    """Two tight clusters of unit-ish vectors (the classes) and their labels."""
    centres = np.eye(dims)[:2] * 5
    labels = rng.integers(0, 2, count)
    return centres[labels] + rng.normal(0, 0.5, (count, dims)), labels


def test_knn_scores_are_cosine_distances_to_the_nearest_references():
    reference = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    detector = KnnNovelty.fit(reference, k=1)
    scores = detector.scores(np.array([[2.0, 0.0], [-1.0, 0.0], [3.0, 3.0], [1.0, 2.0]]))
    np.testing.assert_allclose(scores, [0.0, 1.0, 0.0, 1 - 3 / np.sqrt(10)], atol=1e-6)
    assert KnnNovelty.fit(reference, k=10).k == 3  # never more neighbours than references


@pytest.mark.parametrize("quantile", [0.9, 0.99])
def test_a_threshold_from_validation_scores_flags_the_expected_share(quantile):
    rng = np.random.default_rng(0)
    train, _ = _clusters(rng, 2000)
    validation, _ = _clusters(rng, 1000)
    detector = KnnNovelty.fit(train, k=10)
    threshold = threshold_for(detector.scores(validation), quantile)
    flagged = np.mean(detector.scores(validation) > threshold)
    assert flagged <= 1 - quantile
    assert flagged >= 1 - quantile - 0.005
    fresh, _ = _clusters(rng, 5000)  # more of the same: about the same share
    assert abs(np.mean(detector.scores(fresh) > threshold) - (1 - quantile)) < 0.01


def test_both_detectors_score_photos_unlike_the_training_ones_higher():
    rng = np.random.default_rng(1)
    train, labels = _clusters(rng, 2000)
    near, _ = _clusters(rng, 200)
    far = rng.normal(0, 0.5, (200, 32)) + np.eye(32)[5] * 5  # a third cluster
    for detector in (KnnNovelty.fit(train), MahalanobisNovelty.fit(train, labels)):
        assert detector.scores(far).min() > detector.scores(near).max(), detector.name


def _open_world(threshold: float, review: float) -> OpenWorld:
    reference = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    projection = Projection(np.zeros(3, np.float32), np.eye(3, dtype=np.float32)[:2])
    return OpenWorld(KnnNovelty.fit(reference, k=1).with_threshold(threshold), review, projection)


def test_a_score_above_the_threshold_is_other_and_needs_review():
    world = _open_world(threshold=0.2, review=0.9)
    probabilities = np.array([[0.97, 0.03], [0.2, 0.8], [0.01, 0.99]])
    embeddings = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.1], [0.0, 0.0, 1.0]])
    cat, unsure_dog, far = world.answer(probabilities, embeddings, CLASSES)
    assert (cat.label, cat.needs_review) == ("cat", False)
    assert cat.confidence == pytest.approx(0.97) and cat.novelty_score == pytest.approx(0.0)
    assert (unsure_dog.label, unsure_dog.needs_review) == ("dog", True)  # 0.8 < 0.9
    assert (far.label, far.needs_review) == (OTHER, True)
    assert far.confidence == pytest.approx(0.99)  # of the dog decision it overrode
    assert far.probabilities == {"cat": pytest.approx(0.01), "dog": pytest.approx(0.99)}
    assert far.novelty_score > far.novelty_threshold == 0.2
    assert far.embedding == pytest.approx((0.0, 0.0))


def test_the_open_world_saves_and_loads_identically(tmp_path):
    world = _open_world(threshold=0.25, review=0.93)
    world.save(tmp_path, "fp32")
    loaded = OpenWorld.load(tmp_path, "fp32")
    np.testing.assert_array_equal(loaded.novelty.reference, world.novelty.reference)
    np.testing.assert_array_equal(loaded.projection.components, world.projection.components)
    assert (loaded.novelty.threshold, loaded.novelty.k, loaded.review_threshold) == (
        0.25, 1, 0.93
    )  # fmt: skip


def test_the_projection_keeps_the_main_directions():
    rng = np.random.default_rng(2)
    embeddings = rng.normal(0, 1, (500, 8)) * np.array([10, 5, 1, 1, 1, 1, 1, 1])
    projection = Projection.fit(embeddings, dims=2)
    projected = projection(embeddings)
    assert projected.shape == (500, 2)
    assert projected[:, 0].std() > projected[:, 1].std() > 2


def test_the_review_threshold_keeps_the_unflagged_answers_right():
    # Confident answers are right; the two wrong ones are the least confident.
    probabilities = np.array([[0.99, 0.01]] * 96 + [[0.6, 0.4], [0.55, 0.45]] + [[0.7, 0.3]] * 2)
    labels = np.array([0] * 96 + [1, 1] + [0, 0])
    kept = np.ones(100, bool)
    threshold = review_threshold_for(probabilities, labels, kept, target=0.995)
    assert threshold == pytest.approx(0.7)
    unflagged = probabilities.max(axis=1) >= threshold
    assert (probabilities.argmax(axis=1) == labels)[unflagged].mean() >= 0.995
    right = np.array([0] * 100)
    assert review_threshold_for(probabilities, right, kept) == 0.5  # nothing to flag


def test_temperature_one_changes_nothing_and_the_fit_recovers_a_temperature():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, (4000, 2))
    np.testing.assert_allclose(calibrated(logits, 1.0), calibrated(logits, 1.0))
    true_temperature = 2.0
    labels = np.array([rng.choice(2, p=p) for p in calibrated(logits, true_temperature)])
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.1)
    assert log_loss(labels, calibrated(logits, fitted)) < log_loss(labels, calibrated(logits, 1))
    ece_before = expected_calibration_error(calibrated(logits, 1.0), labels)
    ece_after = expected_calibration_error(calibrated(logits, fitted), labels)
    assert ece_after < 0.03 < ece_before


def test_expected_calibration_error_by_hand():
    # Two bins: (0.6: 1 of 2 right) and (0.9: 2 of 2 right) -> |0.5-0.6|/2 + |1-0.9|/2.
    probabilities = np.array([[0.6, 0.4], [0.6, 0.4], [0.9, 0.1], [0.1, 0.9]])
    labels = np.array([0, 1, 0, 1])
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.1)
