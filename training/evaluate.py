"""Score a classifier on labelled images: metrics, confusion matrix, ROC curve, mistakes,
calibration (reliability diagram) and the share of open-world answers (other, review)."""

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn import metrics as sk

from catsdogs.answers import OTHER, Answer
from training.calibration import expected_calibration_error, reliability

METRIC_NAMES = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")


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
