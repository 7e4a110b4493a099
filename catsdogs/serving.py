"""What the HTTP service needs besides the model: settings, upload validation, metrics,
request logs and prediction logs. service.py wires these to BentoML."""

import functools
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from catsdogs.batching import BatchStats
from catsdogs.config import MODEL_NAME, ImageLimits, available_cores
from catsdogs.predict import Prediction
from catsdogs.preprocessing import InvalidImageError, PreparedImage, prepare_image

request_logger = logging.getLogger("catsdogs.requests")


def configure_request_logging() -> None:
    """One JSON object per line on stderr (service.py turns BentoML's access log off)."""
    if not request_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        request_logger.addHandler(handler)
        request_logger.setLevel(logging.INFO)
        request_logger.propagate = False


# Reasons refused because of size: 413, before or without decoding pixels. The rest are 400.
TOO_LARGE_REASONS = {"too_large", "too_many_pixels", "too_many_files"}


class ServiceSettings(BaseModel):
    """Serving configuration, from CATSDOGS_* environment variables."""

    model_tag: str = f"{MODEL_NAME}:latest"
    workers: int = Field(
        1, ge=0, description="Serving processes, each with its own model (0: one per core)."
    )
    threads: int = Field(
        0,
        ge=0,
        description="Threads per worker for a model call and for decoding uploads "
        "(0: the cores divided among the workers).",
    )
    max_batch_size: int = Field(32, gt=0, description="Most images in one model call.")
    max_queue: int = Field(
        256, gt=0, description="Most images waiting for the model before new ones get 503."
    )
    limits: ImageLimits = ImageLimits()
    max_files: int = Field(16, gt=0, description="Most files in one /predict_batch request.")
    monitoring_dir: Path = Path("monitoring")

    # Measured with benchmarks/serving.py on 2 cores (2 rounds pooled): 1 worker x 2 threads
    # served 0.91-0.94x the in-process limit at 32-64 clients with p99 1.3-2.1x p50, and a
    # lone request in 1.3-1.6x the in-process time; 2 workers x 1 thread served 0.98x but with twice
    # the memory, p99 up to 1.9x p50 (connections spread unevenly over the workers) and a lone
    # request 1.6x slower (one model thread). Hence one worker using every core by default.
    @property
    def worker_count(self) -> int:
        return self.workers or available_cores()

    @property
    def threads_per_worker(self) -> int:
        return self.threads or max(1, available_cores() // self.worker_count)

    @property
    def max_request_bytes(self) -> int:
        """Whole-body cap: every file at its limit plus room for multipart headers."""
        return self.max_files * (self.limits.max_bytes + 64 * 1024)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "ServiceSettings":
        env = os.environ if environ is None else environ
        limits = {
            field: int(env[f"CATSDOGS_{field.upper()}"])
            for field in ImageLimits.model_fields
            if f"CATSDOGS_{field.upper()}" in env
        }
        values: dict[str, Any] = {"limits": ImageLimits(**limits)}
        for field, variable in (
            ("model_tag", "CATSDOGS_MODEL_TAG"),
            ("workers", "CATSDOGS_WORKERS"),
            ("threads", "CATSDOGS_THREADS"),
            ("max_batch_size", "CATSDOGS_MAX_BATCH_SIZE"),
            ("max_queue", "CATSDOGS_MAX_QUEUE"),
            ("max_files", "CATSDOGS_MAX_FILES"),
            ("monitoring_dir", "CATSDOGS_MONITORING_DIR"),
        ):
            if variable in env:
                values[field] = env[variable]
        return cls(**values)


class PredictionResponse(BaseModel):
    label: str = Field(description="cat or dog")
    confidence: float = Field(description="Probability of the predicted label.")
    probabilities: dict[str, float] = Field(description="Probability of every label.")
    model: str = Field(description="BentoML tag of the model that answered.")


class UploadError(Exception):
    """A user's upload that cannot be classified: becomes a 4xx JSON answer."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.status = 413 if reason in TOO_LARGE_REASONS else 400


@dataclass(frozen=True)
class Upload:
    image: PreparedImage
    size_bytes: int
    brightness: float  # mean of the prepared pixels, 0..1: a drift feature of the inputs


def read_upload(path: Path, image_size: int, limits: ImageLimits, name: str = "file") -> Upload:
    """Validate and preprocess one uploaded file; raises UploadError with a clear message."""
    size = path.stat().st_size
    if size > limits.max_bytes:  # refused before reading it
        raise UploadError(
            "too_large", f"{name}: {size} bytes is over the limit of {limits.max_bytes}"
        )
    try:
        image = prepare_image(path.read_bytes(), image_size, limits)
    except InvalidImageError as error:
        raise UploadError(error.reason, f"{name}: {error}") from None
    # Computed here, on the decoding thread, rather than on the event loop.
    return Upload(image, size, float(image.pixels.mean(dtype=np.float32)) / 255.0)


def to_response(prediction: Prediction, model_tag: str) -> PredictionResponse:
    return PredictionResponse(
        label=prediction.label,
        confidence=prediction.confidence,
        probabilities=prediction.probabilities,
        model=model_tag,
    )


class ServiceMetrics:
    """The service's own Prometheus metrics, beside BentoML's request metrics.

    One instance per process, made on first use (service_metrics()): by then the worker has
    set PROMETHEUS_MULTIPROC_DIR, so every worker's values reach /metrics.
    """

    def __init__(self):
        import prometheus_client as prom

        self.predictions = prom.Counter("catsdogs_predictions", "Predictions by label.", ["label"])
        self.confidence = prom.Histogram(
            "catsdogs_prediction_confidence",
            "Probability of the predicted label.",
            buckets=(0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
        )
        self.rejected = prom.Counter(
            "catsdogs_rejected_inputs", "Uploads refused, by reason.", ["reason"]
        )
        self.image_bytes = prom.Histogram(
            "catsdogs_image_bytes",
            "Size of accepted uploads in bytes.",
            buckets=(1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7, 3e7),
        )
        self.image_pixels = prom.Histogram(
            "catsdogs_image_pixels",
            "Width x height of accepted images.",
            buckets=(1e4, 5e4, 1e5, 2.5e5, 5e5, 1e6, 4e6, 1.6e7, 4e7),
        )
        self.batch_size = prom.Histogram(
            "catsdogs_batch_size",
            "Images per model call (adaptive batching).",
            buckets=(1, 2, 4, 8, 16, 32, 64),
        )
        self.batch_seconds = prom.Histogram(
            "catsdogs_batch_inference_seconds",
            "Duration of one model call.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.queue_wait_seconds = prom.Histogram(
            "catsdogs_batch_queue_wait_seconds",
            "How long the oldest image of a batch waited for the model.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.model_info = prom.Gauge(
            "catsdogs_model_info",
            "The model being served (value 1).",
            ["tag", "mlflow_model_version", "mlflow_run_id"],
            multiprocess_mode="max",
        )

    def set_model(self, class_names: Sequence[str], tag: str, metadata: dict[str, Any]) -> None:
        self.model_info.labels(
            tag=tag,
            mlflow_model_version=str(metadata.get("mlflow_model_version", "")),
            mlflow_run_id=str(metadata.get("mlflow_run_id", "")),
        ).set(1)
        for label in class_names:  # every label visible at 0 from the start
            self.predictions.labels(label=label)

    def record_batch(self, stats: BatchStats) -> None:
        self.batch_size.observe(stats.size)
        self.batch_seconds.observe(stats.inference_s)
        self.queue_wait_seconds.observe(stats.queue_wait_s)

    def record(self, upload: Upload, prediction: Prediction) -> None:
        self.predictions.labels(label=prediction.label).inc()
        self.confidence.observe(prediction.confidence)
        self.image_bytes.observe(upload.size_bytes)
        self.image_pixels.observe(upload.image.width * upload.image.height)


@functools.cache
def service_metrics() -> ServiceMetrics:
    return ServiceMetrics()


def log_prediction(
    upload: Upload, prediction: Prediction, model_tag: str, latency_ms: float, request_id: str
) -> None:
    """One prediction record through bentoml.monitor (for drift jobs): never image bytes."""
    import bentoml

    with bentoml.monitor("catsdogs_predictions") as monitor:
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


def json_error(status: int, reason: str, message: str) -> tuple[int, str, bytes]:
    return status, reason, json.dumps({"error": message, "reason": reason}).encode()


class RequestGuard:
    """ASGI middleware: a request id on every request, a structured log line per request,
    a 413 for bodies over the limit before any of the body is read, and a 400 for uploads
    whose form field is missing or misnamed (BentoML would answer those with a 500)."""

    def __init__(self, app, max_request_bytes: int, upload_routes: dict[str, str]):
        self.app = app
        self.max_request_bytes = max_request_bytes
        self.upload_routes = upload_routes  # path -> the form field that must hold the file

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode()[:64] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status_holder = {"status": 500}
        body = b""

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", request_id.encode())]  # fmt: skip
            await send(message)

        try:
            field = (
                self.upload_routes.get(scope.get("path", "")) if scope["method"] == "POST" else None
            )
            length = int(headers.get(b"content-length") or 0)
            if length <= self.max_request_bytes and (field or b"content-length" not in headers):
                # Read the body here (up to the cap) and replay it to the app.
                receive, body = await _buffer_body(receive, self.max_request_bytes)
                length = max(length, len(body))
            refusal = None
            if length > self.max_request_bytes:
                refusal = json_error(
                    413,
                    "too_large",
                    f"request body of {length}+ bytes is over the limit of "
                    f"{self.max_request_bytes}",
                )
            elif field:
                refusal = _check_form_field(headers.get(b"content-type", b""), body, field)
            if refusal:
                status, reason, payload = refusal
                service_metrics().rejected.labels(reason=reason).inc()
                await _respond(send_with_id, status, payload)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            request_logger.info(
                json.dumps(
                    {
                        "event": "request",
                        "method": scope.get("method"),
                        "path": scope.get("path"),
                        "status": status_holder["status"],
                        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                        "request_id": request_id,
                    }
                )
            )


_FORM_FIELD_NAME = re.compile(rb'content-disposition:[^\r\n]*?\bname="([^"]*)"', re.IGNORECASE)
_BOUNDARY = re.compile(rb'boundary="?([^";,]+)"?', re.IGNORECASE)


def _check_form_field(
    content_type: bytes, body: bytes, field: str
) -> tuple[int, str, bytes] | None:
    """A 400 unless the body is multipart form data whose only fields are `field`."""
    usage = f"send the image as multipart form data in a field named '{field}' " \
            f"(curl -F {field}=@photo.jpg ...)"  # fmt: skip
    boundary = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith(b"multipart/form-data") or not boundary:
        return json_error(400, "not_multipart", f"no file uploaded: {usage}")
    names = {name.decode(errors="replace") for name in _form_field_names(body, boundary[1])}
    if field not in names or names - {field}:
        found = ", ".join(sorted(names)) or "none"
        return json_error(400, "wrong_field", f"form fields found: {found}; {usage}")
    return None


def _form_field_names(body: bytes, boundary: bytes) -> list[bytes]:
    """The field name of every part, read from the part headers only: scanning the file
    bytes themselves cost about a tenth of the request handling time under load."""
    names, delimiter = [], b"--" + boundary
    start = body.find(delimiter)
    while start != -1:
        headers_end = body.find(b"\r\n\r\n", start)
        if headers_end == -1:
            break
        names += _FORM_FIELD_NAME.findall(body, start, headers_end)
        start = body.find(delimiter, headers_end)
    return names


async def _buffer_body(receive, limit: int):
    """Read the body, stopping as soon as it passes `limit` bytes."""
    chunks, size, more = [], 0, True
    while more and size <= limit:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = message.get("more_body", False)
    body = b"".join(chunks)
    del chunks  # one copy of the body in memory, not two (uploads may be 300 MB)
    replayed = False

    async def replay():
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay, body


async def _respond(send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
        }
    )  # fmt: skip
    await send({"type": "http.response.body", "body": body})
