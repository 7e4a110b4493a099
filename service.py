"""The catsdogs BentoML service: `bentoml serve` (or `bentoml serve service:CatsDogs`).

One service, one process per worker: each upload is validated and decoded on its own (a bad
file is answered 4xx alone), then its pixels join the next adaptive batch of the exported model
run by ONNX Runtime (catsdogs.batching: a lone request runs at once, concurrent ones share a
call). The logic lives in the `catsdogs` package; this file only wires it to BentoML.
"""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bentoml
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from catsdogs.batching import AdaptiveBatcher, OverloadedError
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
    to_response,
)

SETTINGS = ServiceSettings.from_env()
configure_request_logging()
MODEL = bentoml.models.BentoModel(SETTINGS.model_tag)
# No content-type check: images are recognised by their bytes, whatever name or type they carry.
ImageFile = Path


async def health(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "model": str(MODEL.tag)})


@bentoml.service(
    workers=SETTINGS.worker_count,
    traffic={"timeout": 60},
    # catsdogs.serving.RequestGuard writes one JSON line per request (with its request id);
    # BentoML's own access log would repeat it, at a measurable cost per request.
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": ["/predict", "/predict_batch"]},
    monitoring={"enabled": True, "type": "default",
                "options": {"log_path": str(SETTINGS.monitoring_dir)}},
)  # fmt: skip
# Mounted passively at "/": it answers GET /health and leaves every other path to BentoML.
@bentoml.asgi_app(Starlette(routes=[Route("/health", health)]), path="/")
class CatsDogs:
    """Cats vs dogs: upload a photo to /predict (or several to /predict_batch)."""

    model = MODEL

    def __init__(self) -> None:
        threads = SETTINGS.threads_per_worker
        self.classifier = classifier_from_bento_model(self.model, "onnx", threads=threads)
        self.classifier.warm_up()  # readiness waits for this: no request pays for it
        self.tag = str(self.model.tag)
        self.metrics = service_metrics()
        self.metrics.set_model(self.classifier.class_names, self.tag, self.classifier.metadata)
        self.batcher = AdaptiveBatcher(
            self.classifier.predict_pixels,
            max_batch_size=SETTINGS.max_batch_size,
            max_queue=SETTINGS.max_queue,
            on_batch=self.metrics.record_batch,
        )
        # Pillow releases the GIL while decoding: these threads decode uploads while the
        # model runs the previous batch.
        self.decoder = ThreadPoolExecutor(threads, "decode")

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
        loop = asyncio.get_running_loop()
        try:
            if len(files) > SETTINGS.max_files:
                raise UploadError(
                    "too_many_files", f"{len(files)} files; the limit is {SETTINGS.max_files}"
                )
            image_size, limits = self.classifier.image_size, SETTINGS.limits
            uploads = await asyncio.gather(*(
                loop.run_in_executor(
                    self.decoder, read_upload, path, image_size, limits, f"file {index + 1}"
                )
                for index, path in enumerate(files)
            ))  # fmt: skip
            probabilities = np.stack(
                await asyncio.gather(*(self.batcher.submit(u.image.pixels) for u in uploads))
            )
        except UploadError as error:
            return self._refuse(context, error.status, error.reason, str(error))
        except OverloadedError as error:
            return self._refuse(context, 503, "overloaded", str(error), {"Retry-After": "1"})
        predictions = to_predictions(probabilities, self.classifier.class_names)
        latency_ms = (time.perf_counter() - started) * 1000
        # After the response is sent: the client does not wait for metrics and logs.
        context.response.background.add_task(
            self._record, uploads, predictions, latency_ms, request_id
        )
        return [to_response(prediction, self.tag) for prediction in predictions]

    def _refuse(self, context, status: int, reason: str, message: str, headers=None):
        self.metrics.rejected.labels(reason=reason).inc()
        context.response.status_code = status  # BentoML applies the context's status
        return JSONResponse(
            {"error": message, "reason": reason}, status_code=status, headers=headers
        )

    async def _record(self, uploads, predictions, latency_ms: float, request_id: str) -> None:
        for upload, prediction in zip(uploads, predictions, strict=True):
            self.metrics.record(upload, prediction)
            log_prediction(upload, prediction, self.tag, latency_ms, request_id)


CatsDogs.add_asgi_middleware(
    RequestGuard,
    max_request_bytes=SETTINGS.max_request_bytes,
    upload_routes={"/predict": "file", "/predict_batch": "file"},
)
