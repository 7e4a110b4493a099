"""Prediction records: one per answer through bentoml.monitor, for drift jobs to read.

A record holds what drift detection needs about the input and the answer, never image bytes.
"""

import bentoml

from catsdogs.classifier import Prediction
from catsdogs.uploads import Upload

RECORD_NAME = "catsdogs_predictions"


def log_prediction(
    upload: Upload, prediction: Prediction, model_tag: str, latency_ms: float, request_id: str
) -> None:
    with bentoml.monitor(RECORD_NAME) as monitor:
        monitor.log(request_id, name="x_request_id", role="feature", data_type="categorical")
        monitor.log(upload.image.width, name="width", role="feature", data_type="numerical")
        monitor.log(upload.image.height, name="height", role="feature", data_type="numerical")
        monitor.log(upload.brightness, name="brightness", role="feature", data_type="numerical")
        monitor.log(upload.size_bytes, name="bytes", role="feature", data_type="numerical")
        monitor.log(prediction.label, name="label", role="prediction", data_type="categorical")
        monitor.log(
            prediction.confidence, name="confidence", role="prediction", data_type="numerical"
        )
        monitor.log(latency_ms, name="latency_ms", role="feature", data_type="numerical")
        monitor.log(model_tag, name="model", role="feature", data_type="categorical")
