"""The naive baseline for benchmarks/serving.py: the usual design, not something to deploy.

The same trained model behind a plain FastAPI endpoint that calls it once per request, with
no batching: FastAPI runs the sync endpoint in its thread pool, so concurrent requests call
the model concurrently, one image each. Run by the benchmark as

    CATSDOGS_MODEL_TAG=catsdogs:<version> BASELINE_RUNTIME=onnx BASELINE_PRECISION=int8 \
        uvicorn --app-dir benchmarks baseline_app:app --port 3100

Each request does what the service does for one photo: decode, model call, novelty score.
"""

import os

from fastapi import FastAPI, HTTPException, UploadFile

from catsdogs.errors import RefusedInput
from training.keras_classifier import load_classifier

CLASSIFIER = load_classifier(
    os.environ.get("CATSDOGS_MODEL_TAG", "catsdogs:latest"),
    runtime=os.environ.get("BASELINE_RUNTIME", "keras"),
    precision=os.environ.get("BASELINE_PRECISION", "fp32"),
)
CLASSIFIER.warm_up((1,))
app = FastAPI(title="catsdogs naive baseline")


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok", "model": CLASSIFIER.source, "runtime": CLASSIFIER.runtime}


@app.post("/predict")
def predict(file: UploadFile) -> dict:
    try:
        [answer] = CLASSIFIER.answer_images([file.file.read()])
    except RefusedInput as error:
        raise HTTPException(400, str(error)) from None
    return {
        "label": answer.label,
        "confidence": answer.confidence,
        "probabilities": answer.probabilities,
        "needs_review": answer.needs_review,
        "novelty_score": answer.novelty_score,
        "novelty_threshold": answer.novelty_threshold,
        "model": CLASSIFIER.source,
    }
