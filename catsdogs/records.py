"""Prediction records: one per answer through bentoml.monitor, for drift jobs to read
(`catsdogs drift`, training/drift.py, whose FIELDS name the same fields).

A record holds what drift detection needs about the input and the answer, and nothing that
identifies a person or holds image bytes.
"""

import bentoml

from catsdogs.answers import Answer
from catsdogs.uploads import Upload

RECORD_NAME = "catsdogs_predictions"


def log_prediction(
    upload: Upload, answer: Answer, model_tag: str, latency_ms: float, request_id: str
) -> None:
    with bentoml.monitor(RECORD_NAME) as monitor:
        monitor.log(request_id, name="x_request_id", role="feature", data_type="categorical")
        for name, value in (
            ("width", upload.image.width),
            ("height", upload.image.height),
            ("brightness", upload.brightness),
            ("saturation", upload.saturation),
            ("bytes", upload.size_bytes),
        ):
            monitor.log(value, name=name, role="feature", data_type="numerical")
        monitor.log(answer.label, name="label", role="prediction", data_type="categorical")
        monitor.log(answer.confidence, name="confidence", role="prediction",
                    data_type="numerical")  # fmt: skip
        monitor.log(answer.needs_review, name="needs_review", role="prediction",
                    data_type="categorical")  # fmt: skip
        monitor.log(answer.novelty_score, name="novelty_score", role="prediction",
                    data_type="numerical")  # fmt: skip
        for index, value in enumerate(answer.embedding):
            monitor.log(value, name=f"embedding_{index:02d}", role="feature",
                        data_type="numerical")  # fmt: skip
        monitor.log(latency_ms, name="latency_ms", role="feature", data_type="numerical")
        monitor.log(model_tag, name="model", role="feature", data_type="categorical")
