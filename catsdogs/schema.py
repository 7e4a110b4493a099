"""The HTTP API's response bodies."""

from pydantic import BaseModel, Field

from catsdogs.classifier import Prediction


class PredictionResponse(BaseModel):
    label: str = Field(description="cat or dog")
    confidence: float = Field(description="Probability of the predicted label.")
    probabilities: dict[str, float] = Field(description="Probability of every label.")
    model: str = Field(description="BentoML tag of the model that answered.")


class ErrorResponse(BaseModel):
    error: str = Field(description="What was wrong, in words.")
    reason: str = Field(description="A short machine-readable code, e.g. not_an_image.")


def to_response(prediction: Prediction, model_tag: str) -> PredictionResponse:
    return PredictionResponse(
        label=prediction.label,
        confidence=prediction.confidence,
        probabilities=prediction.probabilities,
        model=model_tag,
    )
