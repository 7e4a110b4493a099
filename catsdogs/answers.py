"""From the model's outputs to answers with three outcomes: cat, dog, or other.

- label: "other" when the photo's novelty score is above the detector's threshold (it is far
  from every training photo: neither a cat nor a dog), else the more probable class;
- confidence: the calibrated probability of the label; for "other", of the cat/dog decision
  it overrode;
- needs_review: a person should look: every "other", and cat/dog answers whose confidence is
  below the review threshold;
- the raw novelty score and its threshold, so that a client can apply its own policy;
- a compact embedding (a fixed projection of the image embedding, fitted at training time)
  for the prediction records that drift detection reads.

An OpenWorld (detector, review threshold, projection) is saved with each model, one per
precision the model runs at, and read back by serving, `catsdogs evaluate` and `predict`.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catsdogs.novelty import KnnNovelty

OTHER = "other"
PROJECTION_DIM = 16


@dataclass(frozen=True)
class Answer:
    label: str
    confidence: float
    probabilities: dict[str, float]
    needs_review: bool
    novelty_score: float
    novelty_threshold: float
    embedding: tuple[float, ...]  # the projected embedding, for prediction records


@dataclass(frozen=True)
class Projection:
    """A fixed linear map of embeddings to a few dimensions (PCA of training embeddings)."""

    mean: np.ndarray  # (D,)
    components: np.ndarray  # (PROJECTION_DIM, D)

    @classmethod
    def fit(cls, embeddings: np.ndarray, dims: int = PROJECTION_DIM) -> "Projection":
        embeddings = np.asarray(embeddings, np.float64)
        mean = embeddings.mean(axis=0)
        _, _, vt = np.linalg.svd(embeddings - mean, full_matrices=False)
        return cls(mean.astype(np.float32), vt[:dims].astype(np.float32))

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        return (np.asarray(embeddings, np.float32) - self.mean) @ self.components.T


@dataclass(frozen=True)
class OpenWorld:
    novelty: KnnNovelty
    review_threshold: float
    projection: Projection

    def answer(
        self, probabilities: np.ndarray, embeddings: np.ndarray, class_names: Sequence[str]
    ) -> list[Answer]:
        """One Answer per row of the model's (N, classes) probabilities and (N, D) embeddings."""
        scores = self.novelty.scores(embeddings)
        projected = self.projection(embeddings)
        answers = []
        for row, score, embedding in zip(probabilities, scores, projected, strict=True):
            best = int(np.argmax(row))
            confidence = float(row[best])
            named = {name: float(p) for name, p in zip(class_names, row, strict=True)}
            novel = bool(score > self.novelty.threshold)
            answers.append(
                Answer(
                    label=OTHER if novel else class_names[best],
                    confidence=confidence,
                    probabilities=named,
                    needs_review=novel or confidence < self.review_threshold,
                    novelty_score=float(score),
                    novelty_threshold=self.novelty.threshold,
                    embedding=tuple(float(value) for value in embedding),
                )
            )
        return answers

    def describe(self) -> dict:
        return {
            "novelty": self.novelty.describe(),
            "review_threshold": self.review_threshold,
            "projection_dims": int(self.projection.components.shape[0]),
        }

    def save(self, folder: Path, precision: str) -> Path:
        """Write the arrays and thresholds to folder/open_world_<precision>.{npz,json}."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"open_world_{precision}.npz"
        np.savez(path, **self.novelty.arrays(), projection_mean=self.projection.mean,
                 projection_components=self.projection.components)  # fmt: skip
        path.with_suffix(".json").write_text(json.dumps(self.describe(), indent=2))
        return path

    @classmethod
    def load(cls, folder: Path, precision: str) -> "OpenWorld":
        path = Path(folder) / f"open_world_{precision}.npz"
        described = json.loads(path.with_suffix(".json").read_text())
        with np.load(path) as arrays:
            novelty = KnnNovelty.from_saved(dict(arrays), described["novelty"])
            projection = Projection(arrays["projection_mean"], arrays["projection_components"])
        return cls(novelty, float(described["review_threshold"]), projection)


def review_threshold_for(
    probabilities: np.ndarray, labels: np.ndarray, kept: np.ndarray, target: float = 0.995
) -> float:
    """The lowest confidence threshold at which at least `target` of the answers that are
    not flagged for review are right. kept: the rows not already flagged (not "other")."""
    confidence = probabilities.max(axis=1)[kept]
    right = (probabilities.argmax(axis=1) == labels)[kept]
    # Two classes: every confidence is at least 0.5, so 0.5 flags nothing.
    for threshold in np.unique(np.concatenate([[0.5], confidence])):
        unflagged = confidence >= threshold
        if not unflagged.any() or right[unflagged].mean() >= target:
            return float(threshold)
    return 1.0
