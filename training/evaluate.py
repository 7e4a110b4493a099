"""Score a classifier on labelled images: metrics, confusion matrix, ROC curve, mistakes,
calibration (reliability diagram) and the share of open-world answers (other, review); 95 %
confidence intervals of those numbers, and accuracy on slices of the photos (small, dark,
grayscale)."""

import math
from collections.abc import Callable, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn import metrics as sk

from catsdogs.answers import OTHER, Answer
from catsdogs.preprocessing import image_statistics
from training.calibration import expected_calibration_error, log_loss, reliability

METRIC_NAMES = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
Z_95 = 1.959963984540054  # the standard normal's 97.5 % point
BOOTSTRAP_ROUNDS = 1000
# Slices of the photos where the model may do worse, each with its definition.
SMALL_SIDE = 200  # px, the original photo's shorter side
DARK_BRIGHTNESS = 0.3  # mean pixel value, 0..1
GRAYSCALE_SATURATION = 0.05  # mean HSV saturation, 0..1
SLICES = {
    "small": f"shorter side under {SMALL_SIDE} px",
    "dark": f"mean brightness under {DARK_BRIGHTNESS}",
    "grayscale": f"mean saturation under {GRAYSCALE_SATURATION}",
}


def compute_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Accuracy, precision/recall/F1 of the positive class (index 1, "dog"), ROC AUC, log loss."""
    predicted = probabilities.argmax(axis=1)
    positive = probabilities[:, 1]
    both_classes = len(np.unique(labels)) == 2
    return {
        "accuracy": float(sk.accuracy_score(labels, predicted)),
        "precision": float(sk.precision_score(labels, predicted, zero_division=0)),
        "recall": float(sk.recall_score(labels, predicted, zero_division=0)),
        "f1": float(sk.f1_score(labels, predicted, zero_division=0)),
        # Undefined with a single class present: NaN says so rather than a made-up number.
        "roc_auc": float(sk.roc_auc_score(labels, positive)) if both_classes else float("nan"),
        "log_loss": float(sk.log_loss(labels, probabilities, labels=[0, 1])),
        "count": len(labels),
    }


def open_world_metrics(answers: Sequence[Answer]) -> dict[str, float]:
    """The share of answers that say "other", and that need review."""
    count = max(1, len(answers))
    return {
        "other_rate": sum(a.label == OTHER for a in answers) / count,
        "review_rate": sum(a.needs_review for a in answers) / count,
    }


def confusion_counts(
    labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str]
) -> dict[str, int]:
    """{"confusion_<true>_as_<predicted>": count} for every pair of classes."""
    matrix = sk.confusion_matrix(labels, probabilities.argmax(axis=1),
                                 labels=list(range(len(class_names))))  # fmt: skip
    return {
        f"confusion_{true}_as_{predicted}": int(matrix[i, j])
        for i, true in enumerate(class_names)
        for j, predicted in enumerate(class_names)
    }


def wilson_interval(successes: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of the proportion successes / total (95 % by default);
    (nan, nan) without trials."""
    if total == 0:
        return math.nan, math.nan
    share = successes / total
    denominator = 1 + z * z / total
    centre = (share + z * z / (2 * total)) / denominator
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / denominator
    # At 0 and at total the bounds are exactly 0 and 1 (the formula can miss by a rounding).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == total else min(1.0, centre + half)
    return low, high


def bootstrap_interval(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    labels: np.ndarray,
    probabilities: np.ndarray,
    seed: int,
    rounds: int = BOOTSTRAP_ROUNDS,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of statistic(labels, probabilities): the photos resampled
    with replacement `rounds` times by a generator seeded with `seed` (the same seed gives the
    same interval). Resamples where the statistic is undefined (NaN: ROC AUC of one class) are
    left out; (nan, nan) when every one is."""
    if len(labels) == 0:
        return math.nan, math.nan
    generator = np.random.default_rng(seed)
    values = np.array([
        statistic(labels[index], probabilities[index])
        for index in generator.integers(0, len(labels), size=(rounds, len(labels)))
    ])  # fmt: skip
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return math.nan, math.nan
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def roc_auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """ROC AUC of the positive class (index 1); NaN with one class present."""
    if len(np.unique(labels)) < 2:
        return math.nan
    return float(sk.roc_auc_score(labels, probabilities[:, 1]))


def f1(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """F1 of the positive class (index 1); 0 when it has no true positives (as sklearn)."""
    predicted = probabilities.argmax(axis=1) == 1
    positive = labels == 1
    true_positives = np.sum(predicted & positive)
    return float(2 * true_positives / (predicted.sum() + positive.sum()) if true_positives else 0.0)


def interval_metrics(labels: np.ndarray, probabilities: np.ndarray, seed: int) -> dict[str, float]:
    """95 % intervals of compute_metrics' numbers, `<metric>_ci_low` and `<metric>_ci_high`:
    Wilson for the proportions (accuracy over every photo, precision over the photos called
    dog, recall over the dogs), a seeded percentile bootstrap for F1, ROC AUC and log loss."""
    predicted = probabilities.argmax(axis=1)
    right = predicted == labels
    intervals = {
        "accuracy": wilson_interval(int(right.sum()), len(labels)),
        "precision": wilson_interval(int(right[predicted == 1].sum()), int(np.sum(predicted == 1))),
        "recall": wilson_interval(int(right[labels == 1].sum()), int(np.sum(labels == 1))),
        "f1": bootstrap_interval(f1, labels, probabilities, seed),
        "roc_auc": bootstrap_interval(roc_auc, labels, probabilities, seed),
        "log_loss": bootstrap_interval(log_loss, labels, probabilities, seed),
    }
    return _interval_items(intervals)


def proportion(name: str, hits: Sequence[bool] | np.ndarray) -> dict[str, float]:
    """A share with its Wilson interval: name, name_ci_low, name_ci_high ({} without photos)."""
    hits = np.asarray(hits, bool)
    if len(hits) == 0:
        return {}
    interval = wilson_interval(int(hits.sum()), len(hits))
    return {name: float(hits.mean()), **_interval_items({name: interval})}


def open_world_intervals(answers: Sequence[Answer]) -> dict[str, float]:
    """Wilson intervals of open_world_metrics' shares: other_rate_ci_low, ..._ci_high."""
    other = sum(a.label == OTHER for a in answers)
    review = sum(a.needs_review for a in answers)
    return _interval_items({
        "other_rate": wilson_interval(other, len(answers)),
        "review_rate": wilson_interval(review, len(answers)),
    })  # fmt: skip


def slice_masks(pixels: np.ndarray, sizes: np.ndarray) -> dict[str, np.ndarray]:
    """Which photos fall into each of SLICES. pixels: the prepared (N, size, size, 3) images;
    sizes: (N, 2) the original photos' width and height."""
    statistics = np.array([image_statistics(image) for image in pixels]).reshape(-1, 2)
    shorter = np.asarray(sizes).reshape(-1, 2).min(axis=1)
    return {
        "small": shorter < SMALL_SIDE,
        "dark": statistics[:, 0] < DARK_BRIGHTNESS,
        "grayscale": statistics[:, 1] < GRAYSCALE_SATURATION,
    }


def slice_metrics(
    labels: np.ndarray, probabilities: np.ndarray, masks: dict[str, np.ndarray]
) -> dict[str, float]:
    """Accuracy on each slice: slice_<name>_count, and, unless the slice has no photos,
    slice_<name>_accuracy with its Wilson interval (_ci_low, _ci_high)."""
    right = probabilities.argmax(axis=1) == labels
    metrics: dict[str, float] = {}
    for name, inside in masks.items():
        metrics[f"slice_{name}_count"] = int(np.sum(inside))
        metrics |= proportion(f"slice_{name}_accuracy", right[inside])
    return metrics


def _interval_items(intervals: dict[str, tuple[float, float]]) -> dict[str, float]:
    return {
        f"{name}_ci_{side}": value
        for name, (low, high) in intervals.items()
        for side, value in (("low", low), ("high", high))
        if math.isfinite(value)
    }


def plot_reliability(labels: np.ndarray, probabilities: np.ndarray) -> Figure:
    """Accuracy against confidence per bin: a calibrated model follows the diagonal."""
    rows = reliability(probabilities, labels)
    figure, axes = plt.subplots(figsize=(4, 4))
    axes.plot([0.5, 1], [0.5, 1], linestyle=":", color="grey")
    if rows:
        confidence, accuracy, counts = zip(*rows, strict=True)
        axes.scatter(confidence, accuracy, s=[10 + 200 * c / max(counts) for c in counts])
        axes.plot(confidence, accuracy)
    ece = expected_calibration_error(probabilities, labels)
    axes.set(xlabel="confidence", ylabel="accuracy", xlim=(0.5, 1.01), ylim=(0, 1.01),
             title=f"Test reliability (ECE {ece:.3f})")  # fmt: skip
    figure.tight_layout()
    return figure


def plot_confusion_matrix(
    labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str]
) -> Figure:
    matrix = sk.confusion_matrix(labels, probabilities.argmax(axis=1), labels=[0, 1])
    figure, axes = plt.subplots(figsize=(4, 4))
    sk.ConfusionMatrixDisplay(matrix, display_labels=list(class_names)).plot(
        ax=axes, colorbar=False, cmap="Blues"
    )
    axes.set_title("Test confusion matrix")
    figure.tight_layout()
    return figure


def plot_roc_curve(labels: np.ndarray, probabilities: np.ndarray, positive_name: str) -> Figure:
    figure, axes = plt.subplots(figsize=(4, 4))
    sk.RocCurveDisplay.from_predictions(labels, probabilities[:, 1], name=positive_name, ax=axes)
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
    axes.set_title("Test ROC curve")
    figure.tight_layout()
    return figure


def plot_misclassified(
    pixels: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    names: Sequence[str],
    limit: int = 24,
) -> Figure | None:
    """A grid of the worst mistakes (most confident first); None when there are none."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    if len(wrong) == 0:
        return None
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]])][:limit]
    columns = min(6, len(wrong))
    rows = -(-len(wrong) // columns)
    figure, grid = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.5 * rows), squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for axes, index in zip(grid.flat, wrong, strict=False):
        axes.imshow(pixels[index])
        axes.set_title(
            f"{names[index].rsplit('/', 1)[-1]}\n{class_names[labels[index]]} → "
            f"{class_names[predicted[index]]} {probabilities[index, predicted[index]]:.2f}",
            fontsize=7,
        )
    figure.tight_layout()
    return figure


def format_metrics_table(metrics: dict[str, float]) -> str:
    width = max(len(name) for name in metrics)
    return "\n".join(
        f"{name:<{width}}  {value:.4f}" if isinstance(value, float) else f"{name:<{width}}  {value}"
        for name, value in metrics.items()
    )
