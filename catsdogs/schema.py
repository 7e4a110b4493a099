"""The HTTP API's response bodies."""

from pydantic import BaseModel, Field

from catsdogs.answers import Answer


class PredictionResponse(BaseModel):
    label: str = Field(
        description='"cat", "dog", or "other": the photo shows neither a cat nor a dog (its '
        "novelty score is above the threshold: it is unlike every photo the model learned from)."
    )
    confidence: float = Field(
        description="Calibrated probability of the label; for other, of the cat/dog decision "
        "it overrode."
    )
    probabilities: dict[str, float] = Field(
        description="Calibrated probability of cat and of dog (they add up to 1)."
    )
    needs_review: bool = Field(
        description="A person should check this answer: every other, and cat/dog answers "
        "whose confidence is below the model's review threshold."
    )
    novelty_score: float = Field(
        description="How far the photo is from the training photos (mean cosine distance to "
        "its nearest training photos; higher is further)."
    )
    novelty_threshold: float = Field(
        description="Scores above this are other: 99 % of held-out cat and dog photos score "
        "at or below it. Clients may apply their own threshold to novelty_score."
    )
    model: str = Field(description="BentoML tag of the model that answered.")


class ErrorResponse(BaseModel):
    error: str = Field(description="What was wrong, in words.")
    reason: str = Field(description="A short machine-readable code, e.g. not_an_image.")


def to_response(answer: Answer, model_tag: str) -> PredictionResponse:
    return PredictionResponse(
        label=answer.label,
        confidence=answer.confidence,
        probabilities=answer.probabilities,
        needs_review=answer.needs_review,
        novelty_score=answer.novelty_score,
        novelty_threshold=answer.novelty_threshold,
        model=model_tag,
    )
