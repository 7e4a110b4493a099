"""The catsdogs BentoML service: `bentoml serve` (or `bentoml serve service:CatsDogs`).

One service, one process per worker, the model's ONNX export run by ONNX Runtime. The logic
lives in the `catsdogs` package: catsdogs.predictor (check, decode, batch, classify, record),
catsdogs.middleware (the upload routes' HTTP path, API keys, rate limits, request logs) and
catsdogs.pages (the upload page, the docs page, the OpenAPI document and the model card); this
file declares the service.
"""

import functools
import logging
import threading
from pathlib import Path

import bentoml
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse

from catsdogs import pages, route_metrics
from catsdogs.errors import RefusedInput
from catsdogs.metrics import service_metrics
from catsdogs.middleware import RequestGuard, configure_request_logging, upload_routes
from catsdogs.model_loader import classifier_from_bento_model, served_precision
from catsdogs.predictor import Predictor
from catsdogs.schema import PredictionResponse
from catsdogs.settings import load_settings
from catsdogs.uploads import UploadedFile

SETTINGS = load_settings()
configure_request_logging()
MODEL = bentoml.models.BentoModel(SETTINGS.model_tag)
# No content-type check: images are recognised by their bytes, whatever name or type they carry.
ImageFile = Path
logger = logging.getLogger("catsdogs.service")


@functools.cache
def precision_served() -> str:
    """Read once from the model's metadata (probes call /health often)."""
    return served_precision(MODEL.resolve(), SETTINGS.precision)


async def health(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "model": str(MODEL.tag), "precision": precision_served()})


def model_file(name: str) -> Path:
    """A file of the served model in the BentoML store (the model card, written at training
    time; served by catsdogs.pages)."""
    return Path(MODEL.resolve().path_of(name))


@bentoml.service(
    workers=SETTINGS.worker_count,
    traffic={"timeout": 60},
    # catsdogs.middleware writes one JSON line per request (with its request id); BentoML's
    # own access log would repeat it, at a measurable cost per request.
    logging={"access": {"enabled": False}},
    monitoring={"enabled": True, "type": "default",
                "options": {"log_path": str(SETTINGS.monitoring_dir)}},
)  # fmt: skip
# Mounted passively at "/": it answers its own paths and leaves every other one to BentoML.
@bentoml.asgi_app(pages.pages_app(health, SETTINGS, model_file), path="/")
class CatsDogs:
    """Cats vs dogs: upload a photo to /predict (or several to /predict_batch)."""

    model = MODEL

    def __init__(self) -> None:
        # The model loads on a thread of its own, so that the worker answers at once: /readyz
        # says 503 until it is loaded and warmed up, and uploads get 503 "loading".
        self.predictor: Predictor | None = None
        self.load_error: BaseException | None = None
        threading.Thread(target=self._load_model, name="load-model", daemon=True).start()

    def _load_model(self) -> None:
        try:
            classifier = classifier_from_bento_model(
                self.model, SETTINGS.threads_per_worker, SETTINGS.precision
            )
            classifier.warm_up()  # no request pays for the first calls
            self.predictor = Predictor(classifier, SETTINGS, service_metrics())
        except BaseException as error:
            logger.exception("the model %s could not be loaded", self.model.tag)
            self.load_error = error

    def __is_ready__(self) -> bool:
        return self.predictor is not None

    def __is_alive__(self) -> bool:
        return self.load_error is None

    # Over HTTP, catsdogs.middleware reads and answers these routes; the methods declare them
    # and answer callers in the same process the same way.
    @bentoml.api(route="/predict")
    async def predict(self, file: ImageFile) -> PredictionResponse:
        """Classify one photo (JPEG, PNG, WebP, GIF, BMP, TIFF...)."""
        [answer] = await self._predict_paths([file])
        return answer

    @bentoml.api(route="/predict_batch")
    async def predict_batch(self, file: list[ImageFile]) -> list[PredictionResponse]:
        """Classify several photos (repeat the `file` field); one result each, in order."""
        return await self._predict_paths(file)

    async def _predict_paths(self, paths: list[Path]) -> list[PredictionResponse]:
        if self.predictor is None:
            raise bentoml.exceptions.ServiceUnavailable("the model is loading")
        files = [UploadedFile(Path(path).read_bytes(), Path(path).name) for path in paths]
        try:
            answers, record = await self.predictor.predict(files)
        except RefusedInput as refusal:
            raise bentoml.exceptions.InvalidArgument(str(refusal)) from None
        record()
        return answers


UPLOAD_ROUTES = upload_routes(CatsDogs)
# BentoML's tracing middleware runs before ours on every request: it can skip these.
CatsDogs.config.setdefault("tracing", {})["excluded_urls"] = list(UPLOAD_ROUTES)
# BentoML's request metrics count every other path under one label (catsdogs.route_metrics).
route_metrics.install(
    route_metrics.RouteLabels(
        [*UPLOAD_ROUTES, *pages.PATHS, "/livez", "/readyz", "/healthz", "/metrics", "/schema.json"],
        prefixes=pages.STATIC_PREFIXES,
    )
)
if SETTINGS.cors_origins:
    # Outside the request middleware (added first), so that its answers get the CORS headers.
    CatsDogs.add_asgi_middleware(
        CORSMiddleware,
        allow_origins=SETTINGS.cors_origins,
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "X-API-Key", "X-Request-Id", "Content-Type"],
        expose_headers=["X-Request-Id", "Retry-After"],
    )
CatsDogs.add_asgi_middleware(
    RequestGuard,
    routes=UPLOAD_ROUTES,
    predictor=lambda: bentoml.get_current_service().predictor,
    settings=SETTINGS,
    documents={
        "/": lambda: RedirectResponse(pages.HOME_REDIRECT),
        "/docs.json": lambda: pages.openapi_response(CatsDogs, UPLOAD_ROUTES),
    },
)
