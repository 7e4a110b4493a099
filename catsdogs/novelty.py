"""How far a photo is from the photos the model was trained on: novelty scores on the
model's image embedding (its pooled backbone features), calibrated on cat and dog photos only.

The world's other photos cannot be listed, so a detector's threshold is the score that a
chosen share (e.g. 99.5 %) of held-out cat and dog photos stay under; anything above it is
called "other". Two detectors:

- KnnNovelty: the mean cosine distance from an embedding to its k nearest training
  embeddings (deep k-NN). The one the service runs.
- MahalanobisNovelty: the Mahalanobis distance to the nearest class mean, with one covariance
  shared by the classes (estimated with shrinkage). Kept to compare against.
"""

from dataclasses import dataclass

import numpy as np


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def threshold_for(scores: np.ndarray, quantile: float) -> float:
    """The score that `quantile` of in-distribution scores stay under (or equal)."""
    return float(np.quantile(np.asarray(scores, dtype=np.float64), quantile, method="higher"))


@dataclass(frozen=True)
class KnnNovelty:
    reference: np.ndarray  # (N, D) unit-length training embeddings, float32
    k: int
    threshold: float = float("inf")

    name = "knn"

    @classmethod
    def fit(cls, train_embeddings: np.ndarray, k: int = 10) -> "KnnNovelty":
        reference = _unit(train_embeddings)
        return cls(reference, min(k, len(reference)))

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """Mean cosine distance to the k nearest reference embeddings, one per row."""
        similarity = _unit(embeddings) @ self.reference.T
        nearest = np.partition(similarity, -self.k, axis=1)[:, -self.k :]
        return (1.0 - nearest.mean(axis=1)).astype(np.float32)

    def leave_one_out_scores(self) -> np.ndarray:
        """The score of every reference embedding against all the others."""
        similarity = self.reference @ self.reference.T
        np.fill_diagonal(similarity, -np.inf)
        nearest = np.partition(similarity, -self.k, axis=1)[:, -self.k :]
        return (1.0 - nearest.mean(axis=1)).astype(np.float32)

    def with_threshold(self, threshold: float) -> "KnnNovelty":
        return KnnNovelty(self.reference, self.k, float(threshold))

    def describe(self) -> dict:
        return {"method": self.name, "k": self.k, "threshold": self.threshold,
                "reference_size": len(self.reference), "distance": "cosine"}  # fmt: skip

    def arrays(self) -> dict[str, np.ndarray]:
        return {"reference": self.reference}

    @classmethod
    def from_saved(cls, arrays: dict[str, np.ndarray], described: dict) -> "KnnNovelty":
        return cls(np.asarray(arrays["reference"], np.float32), int(described["k"]),
                   float(described["threshold"]))  # fmt: skip


@dataclass(frozen=True)
class MahalanobisNovelty:
    means: np.ndarray  # (C, D) class means
    precision: np.ndarray  # (D, D) inverse of the shared covariance
    threshold: float = float("inf")

    name = "mahalanobis"

    @classmethod
    def fit(
        cls, train_embeddings: np.ndarray, labels: np.ndarray, shrinkage: float = 0.1
    ) -> "MahalanobisNovelty":
        embeddings = np.asarray(train_embeddings, np.float64)
        classes = np.unique(labels)
        means = np.stack([embeddings[labels == c].mean(axis=0) for c in classes])
        centred = embeddings - means[np.searchsorted(classes, labels)]
        covariance = centred.T @ centred / len(centred)
        # Shrunk towards a scaled identity: 1280 dimensions from a few thousand photos.
        target = np.eye(len(covariance)) * np.trace(covariance) / len(covariance)
        covariance = (1 - shrinkage) * covariance + shrinkage * target
        return cls(means.astype(np.float32), np.linalg.inv(covariance).astype(np.float32))

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        embeddings = np.asarray(embeddings, np.float32)
        distances = []
        for mean in self.means:
            centred = embeddings - mean
            distances.append(np.einsum("nd,de,ne->n", centred, self.precision, centred))
        return np.sqrt(np.maximum(np.min(distances, axis=0), 0)).astype(np.float32)

    def with_threshold(self, threshold: float) -> "MahalanobisNovelty":
        return MahalanobisNovelty(self.means, self.precision, float(threshold))

    def describe(self) -> dict:
        return {"method": self.name, "threshold": self.threshold, "classes": len(self.means)}
