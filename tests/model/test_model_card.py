"""The model card: its confidence intervals and slices on small arrays, its text on made-up
facts, and, for the session's model trained on the sample, the card in the BentoML model and
in MLflow with every section and the same numbers as the run's MLflow metrics."""

import math
import re
from pathlib import Path

import bentoml
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pytest

from catsdogs.config import MODEL_CARD_FILE, MODEL_CARD_HTML_FILE, MODEL_CARD_PLOT_FILE
from training import evaluate
from training.config import TrainConfig
from training.model_card import SECTIONS, CardFacts, markdown, write_model_card

CLASSES = ("cat", "dog")


# --- Intervals and slices ------------------------------------------------------------------


def test_wilson_interval_by_hand():
    # 8 of 10, z = 1.96: centre (0.8 + z²/20) / (1 + z²/10), half-width
    # z sqrt(0.8 * 0.2 / 10 + z² / 400) / (1 + z²/10).
    z = 1.959963984540054
    denominator = 1 + z**2 / 10
    centre = (0.8 + z**2 / 20) / denominator
    half = z * math.sqrt(0.016 + z**2 / 400) / denominator
    low, high = evaluate.wilson_interval(8, 10)
    assert (low, high) == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # published tables
    assert evaluate.wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert evaluate.wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert all(math.isnan(bound) for bound in evaluate.wilson_interval(0, 0))


def _predictions(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(seed)
    labels = generator.integers(0, 2, count)
    # Overlapping scores: about one photo in five on the wrong side of 0.5.
    dog = np.clip(0.3 + 0.4 * labels + generator.normal(0, 0.25, count), 0.01, 0.99)
    return labels, np.stack([1 - dog, dog], axis=1)


def test_bootstrap_interval_is_deterministic_for_a_seed():
    labels, probabilities = _predictions(40)
    first = evaluate.bootstrap_interval(evaluate.roc_auc, labels, probabilities, seed=7)
    again = evaluate.bootstrap_interval(evaluate.roc_auc, labels, probabilities, seed=7)
    other = evaluate.bootstrap_interval(evaluate.roc_auc, labels, probabilities, seed=8)
    assert first == again
    assert first != other
    low, high = evaluate.bootstrap_interval(evaluate.log_loss, labels, probabilities, seed=7)
    assert low <= evaluate.log_loss(labels, probabilities) <= high


def test_bootstrap_of_an_undefined_statistic_is_nan():
    labels = np.zeros(5, np.int64)  # one class: no ROC AUC in any resample
    probabilities = np.tile([0.9, 0.1], (5, 1))
    low, high = evaluate.bootstrap_interval(evaluate.roc_auc, labels, probabilities, seed=1)
    assert math.isnan(low) and math.isnan(high)


def test_interval_metrics_bracket_the_point_estimates():
    labels, probabilities = _predictions(60, seed=3)
    point = evaluate.compute_metrics(labels, probabilities)
    intervals = evaluate.interval_metrics(labels, probabilities, seed=42)
    for name in evaluate.METRIC_NAMES:
        assert intervals[f"{name}_ci_low"] <= point[name] <= intervals[f"{name}_ci_high"], name
    right = probabilities.argmax(1) == labels
    assert (intervals["accuracy_ci_low"], intervals["accuracy_ci_high"]) == (
        evaluate.wilson_interval(int(right.sum()), len(labels))
    )


def test_slices_of_small_dark_and_grayscale_photos():
    bright_colour = np.zeros((4, 4, 3), np.uint8)
    bright_colour[..., 0] = 250
    bright_colour[..., 1] = 120
    dark_gray = np.full((4, 4, 3), 30, np.uint8)
    light_gray = np.full((4, 4, 3), 200, np.uint8)
    pixels = np.stack([bright_colour, dark_gray, light_gray])
    sizes = np.array([(640, 480), (150, 400), (300, 199)])
    masks = evaluate.slice_masks(pixels, sizes)
    assert masks["small"].tolist() == [False, True, True]
    assert masks["dark"].tolist() == [False, True, False]
    assert masks["grayscale"].tolist() == [False, True, True]

    labels = np.array([0, 1, 1])
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])  # the last one wrong
    metrics = evaluate.slice_metrics(labels, probabilities, masks)
    assert metrics["slice_small_count"] == 2
    assert metrics["slice_small_accuracy"] == 0.5
    assert (metrics["slice_small_accuracy_ci_low"], metrics["slice_small_accuracy_ci_high"]) == (
        evaluate.wilson_interval(1, 2)
    )
    assert metrics["slice_dark_accuracy"] == 1.0


def test_an_empty_slice_has_a_count_and_no_accuracy():
    labels, probabilities = _predictions(5)
    metrics = evaluate.slice_metrics(labels, probabilities, {"dark": np.zeros(5, bool)})
    assert metrics == {"slice_dark_count": 0}
    assert evaluate.proportion("nonpet_other_rate", []) == {}


# --- The card's text -----------------------------------------------------------------------


def _facts(metrics: dict[str, float]) -> CardFacts:
    return CardFacts(
        bento_tag="catsdogs:abc123",
        mlflow_run_id="0123456789abcdef",
        mlflow_model_version="3",
        trained_at="2025-01-31 12:00 UTC",
        config=TrainConfig(),
        dataset_fingerprint="f" * 64,
        class_names=CLASSES,
        metrics=metrics,
    )


def test_card_from_made_up_metrics_has_every_section_and_says_no_photos(tmp_path):
    metrics = {"test_accuracy": 0.95, "test_accuracy_ci_low": 0.8, "test_accuracy_ci_high": 0.99,
               "test_count": 20, "test_slice_dark_count": 0, "head_wall_seconds": 3.0}  # fmt: skip
    figure = plt.figure()
    paths = write_model_card(_facts(metrics), figure, tmp_path)
    plt.close(figure)
    assert set(paths) == {MODEL_CARD_FILE, MODEL_CARD_HTML_FILE, MODEL_CARD_PLOT_FILE}
    text = paths[MODEL_CARD_FILE].read_text()
    assert text == markdown(_facts(metrics))
    assert _headings(text) == list(SECTIONS)
    assert _row(text, "accuracy")[1:3] == ["0.9500", "[0.8000, 0.9900]"]
    assert _row(text, "dark")[2:4] == ["0", "no photos"]
    assert "not measured (no non-pet folder)" in text  # no nonpet_other_rate metric
    page = paths[MODEL_CARD_HTML_FILE].read_text()
    assert "<table>" in page and "<h2>Evaluation</h2>" in page
    assert 'src="data:image/png;base64,' in page
    assert "http://" not in page and "https://" not in page  # loads nothing from anywhere


# --- The session's trained model -----------------------------------------------------------


@pytest.fixture(scope="module")
def card(trained_model, tmp_path_factory):
    """The card's markdown from the BentoML model, from MLflow, and the run's metrics."""
    bento_model = bentoml.models.get(trained_model.registered.bento_tag)
    folder = Path(mlflow.artifacts.download_artifacts(
        run_id=trained_model.run_id, artifact_path="model_card",
        dst_path=str(tmp_path_factory.mktemp("card")),
    ))  # fmt: skip
    return {
        "bento": Path(bento_model.path_of("")),
        "mlflow": folder,
        "metrics": mlflow.MlflowClient().get_run(trained_model.run_id).data.metrics,
    }


def test_card_is_in_the_bento_model_and_in_mlflow(card, trained_model):
    for name in (MODEL_CARD_FILE, MODEL_CARD_HTML_FILE, MODEL_CARD_PLOT_FILE):
        assert (card["bento"] / name).is_file(), name
        assert (card["mlflow"] / name).read_bytes() == (card["bento"] / name).read_bytes(), name
    text = (card["bento"] / MODEL_CARD_FILE).read_text()
    assert text.startswith(f"# Model card: {trained_model.registered.bento_tag}\n")
    assert _headings(text) == list(SECTIONS)
    assert trained_model.run_id in text
    assert f"{trained_model.registered.mlflow_version} (`models:/catsdogs/" in text
    assert (card["bento"] / MODEL_CARD_PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_card_numbers_are_the_mlflow_metrics(card):
    text = (card["bento"] / MODEL_CARD_FILE).read_text()
    metrics = card["metrics"]

    def same(cell: str, name: str) -> None:
        assert float(cell) == pytest.approx(metrics[name], abs=5e-5), name

    for name in ("accuracy", "log_loss", "roc_auc"):
        row = _row(text, name)
        same(row[1], f"test_{name}")
        low, high = re.fullmatch(r"\[(\S+), (\S+)\]", row[2]).groups()
        same(low, f"test_{name}_ci_low")
        same(high, f"test_{name}_ci_high")
    other = _row(text, "test cat and dog photos called other")
    same(other[1], "test_other_rate")
    assert int(other[3]) == metrics["test_count"]
    same(_row(text, "test answers flagged for review")[1], "test_review_rate")
    same(_row(text, "review threshold")[1], "review_threshold")
    nonpet = _row(text, "non-pet photos called other (caught)")
    same(nonpet[1], "nonpet_other_rate")
    assert int(nonpet[3]) == metrics["nonpet_count"] >= 50
    for name in evaluate.SLICES:
        row = _row(text, name)
        assert int(row[2]) == metrics[f"test_slice_{name}_count"], name
        if metrics[f"test_slice_{name}_count"]:
            same(row[3], f"test_slice_{name}_accuracy")
        else:
            assert row[3] == "no photos"
    if "int8_same_label" in metrics:
        same(_row(text, "same label as fp32")[1], "int8_same_label")
    else:
        # The sample's test split is too small for the int8 gate: the card says so.
        assert "Precision: **fp32**. No int8 copy was made" in text
    confusion = _row(text, "cat")
    assert [int(cell) for cell in confusion[1:]] == [
        metrics["test_confusion_cat_as_cat"], metrics["test_confusion_cat_as_dog"]
    ]  # fmt: skip


def test_slice_and_interval_metrics_are_logged(card, trained_model):
    metrics = card["metrics"]
    for name in evaluate.METRIC_NAMES:
        if math.isfinite(metrics[f"test_{name}"]):
            assert metrics[f"test_{name}_ci_low"] <= metrics[f"test_{name}"], name
            assert metrics[f"test_{name}"] <= metrics[f"test_{name}_ci_high"], name
    for name in evaluate.SLICES:
        assert 0 <= metrics[f"test_slice_{name}_count"] <= metrics["test_count"], name
    cells = [metrics[f"test_confusion_{true}_as_{predicted}"]
             for true in CLASSES for predicted in CLASSES]  # fmt: skip
    assert sum(cells) == metrics["test_count"]
    assert 0 <= metrics["nonpet_other_rate"] <= 1
    # An int8 copy is measured on the same photos; the sample's has none (too few test photos).
    assert ("int8_nonpet_other_rate" in metrics) == ("int8_same_label" in metrics)


def _headings(text: str) -> list[str]:
    return [line[3:] for line in text.splitlines() if line.startswith("## ")]


def _row(text: str, first: str) -> list[str]:
    """The cells of the first table row whose first cell is `first`."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first:
            return cells
    raise AssertionError(f"no table row {first!r} in the card")
