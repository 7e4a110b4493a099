"""The classifier head fitted as L2 logistic regression on the backbone's features (fast
mode): as good as a gradient-trained head or better, with no epochs or learning rate to pick
(its strength comes from inner cross-validation), in seconds (benchmarks/CROSSVAL.md)."""

from dataclasses import dataclass

import keras
import numpy as np

# Regularisation strengths tried (sklearn's C: larger is weaker), by inner 5-fold CV log loss.
C_GRID = tuple(float(c) for c in np.logspace(-3, 1, 9))
INNER_FOLDS = 5


@dataclass(frozen=True)
class LogisticHead:
    c: float  # the regularisation strength the inner cross-validation chose
    # Each training photo's class logits [0, w.x + b] from the inner model fitted without it:
    # thousands of held-out logits, for the temperature.
    out_of_fold_logits: np.ndarray


def fit_logistic_head(
    head: keras.Sequential, features: np.ndarray, labels: np.ndarray, seed: int = 0
) -> LogisticHead:
    """Fit the logistic regression and write it into the head's dense layer as logits
    [0, w.x + b] (their softmax is the regression's probabilities)."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from threadpoolctl import threadpool_limits

    folds = StratifiedKFold(INNER_FOLDS, shuffle=True, random_state=seed)
    features = np.asarray(features, np.float64)
    # One BLAS thread: on a small machine, threads waiting on each other slow each fit down.
    with threadpool_limits(1):
        model = LogisticRegressionCV(
            Cs=C_GRID,
            cv=folds,
            scoring="neg_log_loss",
            max_iter=10_000,
            use_legacy_attributes=False,
        ).fit(features, labels)
        c = float(np.ravel(model.C_)[0])
        out_of_fold = cross_val_predict(
            LogisticRegression(C=c, max_iter=10_000), features, labels, cv=folds,
            method="decision_function",
        )  # fmt: skip
    head.build((None, features.shape[1]))
    [dense] = [layer for layer in head.layers if isinstance(layer, keras.layers.Dense)]
    kernel = np.zeros(dense.kernel.shape, np.float32)
    kernel[:, 1] = model.coef_[0]
    bias = np.array([0.0, model.intercept_[0]], np.float32)
    dense.set_weights([kernel, bias])
    logits = np.stack([np.zeros_like(out_of_fold), out_of_fold], axis=1)
    return LogisticHead(c, logits)
