"""Calibrated confidence: temperature scaling fitted on held-out logits, and the
expected calibration error that says how far confidence is from accuracy."""

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

ECE_BINS = 10
# The spread of log T a priori: T is most likely near 1, rarely beyond [0.37, 2.7].
TEMPERATURE_PRIOR_SD = 0.5


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, prior_sd: float = TEMPERATURE_PRIOR_SD
) -> float:
    """The temperature T that minimises the log loss of softmax(logits / T) on labels, with a
    Gaussian prior on log T. Without the prior, a small validation split that the model gets
    all right drives T towards 0 (ever more confident answers lower its loss), which makes the
    model overconfident on new photos; with thousands of photos the data decide."""
    logits = np.asarray(logits, np.float64)

    def objective(log_t: float) -> float:
        scaled = log_softmax(logits / np.exp(log_t), axis=1)
        total_loss = -float(scaled[np.arange(len(labels)), labels].sum())
        return total_loss + log_t**2 / (2 * prior_sd**2)

    best = minimize_scalar(objective, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(best.x))


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-15, 1.0)
    return float(-np.log(picked).mean())


def calibrated(logits: np.ndarray, temperature: float) -> np.ndarray:
    return softmax(np.asarray(logits, np.float64) / temperature, axis=1).astype(np.float32)


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE over `bins` equal-width bins of top-label confidence: the mean, weighted by bin
    size, of |accuracy - mean confidence| in each bin."""
    confidence = probabilities.max(axis=1)
    right = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds confidences in (edges[i], edges[i+1]]; the first also holds 0.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    error = 0.0
    for index in range(bins):
        inside = which == index
        if inside.any():
            error += inside.mean() * abs(right[inside].mean() - confidence[inside].mean())
    return float(error)


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS):
    """(mean confidence, accuracy, count) per non-empty bin, for a reliability diagram."""
    confidence = probabilities.max(axis=1)
    right = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    rows = []
    for index in range(bins):
        inside = which == index
        if inside.any():
            rows.append((float(confidence[inside].mean()), float(right[inside].mean()),
                         int(inside.sum())))  # fmt: skip
    return rows
