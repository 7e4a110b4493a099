"""The catsdogs BentoML service: `bentoml serve` (or `bentoml serve service:CatsDogs`).

Two services in one deployment:
  CatsDogs  - HTTP entry: validates and preprocesses each upload on its own, so one bad file
              is answered 4xx alone and never reaches (or fails) a batch of other clients'.
  Classifier - the model behind BentoML's adaptive batching: only valid pixel arrays arrive.
The logic lives in the `catsdogs` package; this file only wires it to BentoML.
"""

import asyncio
import logging
import time
from pathlib import Path

import aiohttp
import bentoml
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from catsdogs.models import classifier_from_bento_model
from catsdogs.predict import to_predictions
from catsdogs.serving import (
    PredictionResponse,
    RequestGuard,
    ServiceSettings,
    UploadError,
    configure_request_logging,
    log_prediction,
    read_upload,
    service_metrics,
    stack_pixels,
    to_response,
)

SETTINGS = ServiceSettings.from_env()
configure_request_logging()
MODEL = bentoml.models.BentoModel(SETTINGS.model_tag)
# No content-type check: images are recognised by their bytes, whatever name or type they carry.
ImageFile = Path
CLASSIFIER_ATTEMPTS = 3
logger = logging.getLogger("catsdogs.service")


@bentoml.service(workers=1, traffic={"timeout": 60})
class Classifier:
    """The model, called through a compiled, warmed-up function in adaptive batches."""

    model = MODEL

    def __init__(self) -> None:
        self.classifier = classifier_from_bento_model(self.model)
        self.classifier.warm_up()  # readiness waits for this: no request pays for tracing

    # Measured with benchmarks/model_latency.py on 2 CPU cores (README, "Batching"): images/s
    # peaks at batches of 4-8 (~53/s idle) and falls beyond (47/s at 16, 37/s at 32), so
    # larger batches only add latency. 64 concurrent clients queue ~8 batches of 8 at ~150 ms
    # (~1.2 s) on an idle machine, but a shared CPU made that several times longer and gave
    # 503s at max_latency_ms=5000; 15 s keeps the margin, well inside the 60 s timeout.
    @bentoml.api(batchable=True, max_batch_size=8, max_latency_ms=15_000)
    def classify(self, pixels: np.ndarray) -> np.ndarray:
        return self.classifier.predict_pixels(pixels)


async def health(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "model": str(MODEL.tag)})


@bentoml.service(
    workers=SETTINGS.workers,
    traffic={"timeout": 60},
    monitoring={"enabled": True, "type": "default",
                "options": {"log_path": str(SETTINGS.monitoring_dir)}},
)  # fmt: skip
# Mounted passively at "/": it answers GET /health and leaves every other path to BentoML.
@bentoml.asgi_app(Starlette(routes=[Route("/health", health)]), path="/")
class CatsDogs:
    """Cats vs dogs: upload a photo to /predict (or several to /predict_batch)."""

    model = MODEL
    classifier = bentoml.depends(Classifier)

    def __init__(self) -> None:
        metadata = dict(self.model.info.metadata)
        self.tag = str(self.model.tag)
        self.image_size = int(metadata["image_size"])
        self.class_names = tuple(metadata["class_names"])
        self.metrics = service_metrics()
        self.metrics.set_model(self.class_names, self.tag, metadata)

    @bentoml.api(route="/predict")
    async def predict(self, file: ImageFile, context: bentoml.Context) -> PredictionResponse:
        """Classify one photo (JPEG, PNG, WebP, GIF, BMP, TIFF...)."""
        responses = await self._classify([file], context)
        return responses if isinstance(responses, JSONResponse) else responses[0]

    @bentoml.api(route="/predict_batch")
    async def predict_batch(
        self, file: list[ImageFile], context: bentoml.Context
    ) -> list[PredictionResponse]:
        """Classify several photos (repeat the `file` field); one result each, in order."""
        return await self._classify(file, context)

    async def _classify(self, files: list[Path], context: bentoml.Context):
        started = time.perf_counter()
        request_id = context.request.scope.get("state", {}).get("request_id", "")
        try:
            if len(files) > SETTINGS.max_files:
                raise UploadError(
                    "too_many_files", f"{len(files)} files; the limit is {SETTINGS.max_files}"
                )
            uploads = await asyncio.to_thread(
                lambda: [
                    read_upload(path, self.image_size, SETTINGS.limits, f"file {index + 1}")
                    for index, path in enumerate(files)
                ]
            )
        except UploadError as error:
            self.metrics.rejected.labels(reason=error.reason).inc()
            context.response.status_code = error.status  # BentoML applies the context's status
            return JSONResponse(
                {"error": str(error), "reason": error.reason}, status_code=error.status
            )
        probabilities = await self._call_classifier(stack_pixels(uploads))
        predictions = to_predictions(probabilities, self.class_names)
        latency_ms = (time.perf_counter() - started) * 1000
        for upload, prediction in zip(uploads, predictions, strict=True):
            self.metrics.record(upload, prediction)
            log_prediction(upload, prediction, self.tag, latency_ms, request_id)
        return [to_response(prediction, self.tag) for prediction in predictions]

    async def _call_classifier(self, pixels: np.ndarray) -> np.ndarray:
        # BentoML's service-to-service client sometimes finds its pooled connection closed
        # under load (aiohttp ServerDisconnectedError or ClientOSError; bentoml/BentoML#4238).
        # Classifying is idempotent, so a fresh attempt is safe.
        for _ in range(CLASSIFIER_ATTEMPTS - 1):
            try:
                return await self.classifier.to_async.classify(pixels)
            except aiohttp.ClientConnectionError as error:
                logger.warning("classifier connection lost (%r); retrying", error)
        return await self.classifier.to_async.classify(pixels)


CatsDogs.add_asgi_middleware(
    RequestGuard,
    max_request_bytes=SETTINGS.max_request_bytes,
    upload_routes={"/predict": "file", "/predict_batch": "file"},
)
