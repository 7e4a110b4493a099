"""What the service serves besides its API: the upload page (/app) and the limits it reads
(/app/config), the API docs page, the OpenAPI document with every answer the upload routes
give, /health, the served model's model card (/model-card, and its markdown at
/model-card.md), and its static files.

The upload page is plain HTML, CSS and JavaScript in catsdogs/web/ (app.html, app.css, app.js):
it loads nothing from the internet either, and its Content-Security-Policy says so to the
browser.

The docs page is Swagger UI from BentoML's own copy of its files, without the tag manager
BentoML's page loads from the internet: it works offline and tells no third party about a
visit. service.py mounts pages_app(); the request middleware serves "/" (a redirect) and
"/docs.json", which BentoML routes itself.
"""

import functools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

import catsdogs
from catsdogs.config import MODEL_CARD_FILE, MODEL_CARD_HTML_FILE
from catsdogs.schema import ErrorResponse
from catsdogs.settings import ServiceSettings

WEB_DIR = Path(__file__).parent / "web"
APP_PATH = "/app"
APP_CONFIG_PATH = "/app/config"
DOCS_PATH = "/docs"
HOME_REDIRECT = APP_PATH
# The model card's routes: the file of the served model each answers with, and its type.
MODEL_CARD_ROUTES = {
    "/model-card": (MODEL_CARD_HTML_FILE, "text/html; charset=utf-8"),
    "/model-card.md": (MODEL_CARD_FILE, "text/markdown; charset=utf-8"),
}
# What the service serves besides its API, health and metrics (for bounded metric labels).
PATHS = ("/", APP_PATH, f"{APP_PATH}/", APP_CONFIG_PATH, DOCS_PATH, "/docs.json", "/health",
         *MODEL_CARD_ROUTES)  # fmt: skip
# The upload page may load its own files and blob: thumbnails, and talk to this service only.
APP_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
STATIC_PREFIXES = ("/static_content", "/web")

# The answers of an upload route besides 200, and when each is given.
UPLOAD_ROUTE_ERRORS = {
    "400": "Not an image that can be classified (empty, not an image, corrupt or truncated, "
    "too small), or a request that is not an upload (no file, a misnamed field, a text field "
    "instead of a file, a malformed multipart body). `reason` says which.",
    "401": "API keys are on, and the request has no valid key (`Authorization: Bearer KEY` "
    "or `X-API-Key: KEY`).",
    "413": "Too large: the file (`too_large`), the request body, the image's pixels "
    "(`too_many_pixels`, from its header) or the number of files (`too_many_files`).",
    "429": "Rate limits are on, and this key or address has used its share: try again after "
    "`Retry-After` seconds.",
    "503": "The model is loading (`loading`) or more images are waiting than the service "
    "queues (`overloaded`): try again after `Retry-After` seconds.",
}
RAW_IMAGE_BODY = {"schema": {"type": "string", "format": "binary"}}
# BentoML's own description shows badges fetched from image hosts: this one fetches nothing.
API_DESCRIPTION = """Tells cats from dogs in photos.

Send a photo to `/predict` as multipart form data in the field `file`, or as the request body
with an image content type; send several to `/predict_batch` (repeat `file`). Every refusal is
JSON, `{"error": "...", "reason": "..."}`, with the status listed under each route."""


def app_config(settings: ServiceSettings) -> dict:
    """What the upload page needs to know before it uploads: the limits it can check itself
    (a file over max_bytes is refused before it is sent) and whether it must ask for a key."""
    return {
        "max_bytes": settings.max_bytes,
        "max_files": settings.max_files,
        "min_side": settings.min_side,
        "api_keys": bool(settings.api_key_digests),
    }


def pages_app(
    health: Callable[[Request], Any],
    settings: ServiceSettings,
    model_file: Callable[[str], Path] | None = None,
) -> Starlette:
    """GET /health, GET /app (the upload page) and /app/config (its settings), GET /docs (the
    API docs page), the pages' own files under /web, and the model card: model_file(name) is
    the path of one of the served model's files (called per request; None: no model card).
    The card's HTML page is self-contained (inline CSS, its plot a data: URL): it loads
    nothing from anywhere."""
    config = app_config(settings)

    async def app_page(_: Request) -> FileResponse:
        return FileResponse(WEB_DIR / "app.html", headers=APP_PAGE_HEADERS)

    async def app_settings(_: Request) -> JSONResponse:
        return JSONResponse(config, headers={"Cache-Control": "no-store"})

    async def app_slash(_: Request) -> RedirectResponse:
        return RedirectResponse(APP_PATH)

    async def docs_page(_: Request) -> FileResponse:
        return FileResponse(WEB_DIR / "docs.html")

    async def model_card(request: Request) -> FileResponse | JSONResponse:
        name, media_type = MODEL_CARD_ROUTES[request.url.path]
        path = model_file(name) if model_file else None
        if path is None or not path.is_file():
            return JSONResponse(
                {"error": "the served model has no model card: it was trained before model "
                 "cards existed (retrain it to get one)", "reason": "no_model_card"},
                status_code=404,
            )  # fmt: skip
        return FileResponse(path, media_type=media_type)

    return Starlette(
        routes=[
            Route("/health", health),
            Route(APP_PATH, app_page),
            Route(f"{APP_PATH}/", app_slash),
            Route(APP_CONFIG_PATH, app_settings),
            Route(DOCS_PATH, docs_page),
            *(Route(path, model_card) for path in MODEL_CARD_ROUTES),
            Mount("/web", StaticFiles(directory=WEB_DIR), name="web"),
        ]
    )


def openapi_document(service: Any, upload_paths: Iterable[str]) -> dict:
    """BentoML's OpenAPI document for the service, with what the upload routes really accept
    (multipart form data or the image itself) and answer (every refusal, ErrorResponse)."""
    document = service.openapi_spec.asdict()
    document["info"] = {
        "title": "catsdogs",
        "version": catsdogs.__version__,
        "description": API_DESCRIPTION,
    }
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorResponse"] = ErrorResponse.model_json_schema()
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    retry_after = {
        "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}
    }
    for path in upload_paths:
        operation = document["paths"][path]["post"]
        content = operation["requestBody"]["content"]
        for media_type in ("image/*", "application/octet-stream"):
            content[media_type] = RAW_IMAGE_BODY
        ok = operation["responses"].get(200) or operation["responses"]["200"]
        responses = {"200": ok}
        for status, description in UPLOAD_ROUTE_ERRORS.items():
            responses[status] = {"description": description, "content": error}
            if status in ("429", "503"):
                responses[status]["headers"] = retry_after
        operation["responses"] = responses
    # BentoML describes a list of files with "type": "file", which OpenAPI 3.0 does not have.
    for schema in schemas.values():
        for field in schema.get("properties", {}).values():
            if field.get("items", {}).get("type") == "file":
                field["items"] = {"type": "string", "format": "binary"}
    return document


def openapi_response(service: Any, upload_paths: Iterable[str]) -> JSONResponse:
    return JSONResponse(_cached_document(service, tuple(upload_paths)))


@functools.cache
def _cached_document(service: Any, upload_paths: tuple[str, ...]) -> dict:
    return openapi_document(service, upload_paths)
