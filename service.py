"""The catsdogs BentoML service: `bentoml serve` (or `bentoml serve service:CatsDogs`).

One service, one process per worker, the model's ONNX export run by ONNX Runtime. The logic
lives in the `catsdogs` package: catsdogs.predictor (check, decode, batch, classify, record)
and catsdogs.middleware (the upload routes' HTTP path); this file declares the API.
"""

from pathlib import Path

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from catsdogs.errors import RefusedInput
from catsdogs.metrics import service_metrics
from catsdogs.middleware import RequestGuard, configure_request_logging, upload_routes
from catsdogs.model_loader import classifier_from_bento_model
from catsdogs.predictor import Predictor
from catsdogs.schema import PredictionResponse
from catsdogs.settings import load_settings
from catsdogs.uploads import UploadedFile

SETTINGS = load_settings()
configure_request_logging()
MODEL = bentoml.models.BentoModel(SETTINGS.model_tag)
# No content-type check: images are recognised by their bytes, whatever name or type they carry.
ImageFile = Path


async def health(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "model": str(MODEL.tag)})


@bentoml.service(
    workers=SETTINGS.worker_count,
    traffic={"timeout": 60},
    # catsdogs.middleware writes one JSON line per request (with its request id); BentoML's
    # own access log would repeat it, at a measurable cost per request.
    logging={"access": {"enabled": False}},
    monitoring={"enabled": True, "type": "default",
                "options": {"log_path": str(SETTINGS.monitoring_dir)}},
)  # fmt: skip
# Mounted passively at "/": it answers GET /health and leaves every other path to BentoML.
@bentoml.asgi_app(Starlette(routes=[Route("/health", health)]), path="/")
class CatsDogs:
    """Cats vs dogs: upload a photo to /predict (or several to /predict_batch)."""

    model = MODEL

    def __init__(self) -> None:
        classifier = classifier_from_bento_model(self.model, SETTINGS.threads_per_worker)
        classifier.warm_up()  # readiness waits for this: no request pays for it
        self.predictor = Predictor(classifier, SETTINGS, service_metrics())

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
CatsDogs.add_asgi_middleware(
    RequestGuard,
    routes=UPLOAD_ROUTES,
    predictor=lambda: bentoml.get_current_service().predictor,
    settings=SETTINGS,
)
