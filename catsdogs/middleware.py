"""The request middleware: a request id and one JSON log line for every request, and the
upload routes' whole HTTP path.

A POST to an upload route is read here, once: its body is parsed while it arrives (in memory,
refused as soon as it breaks a limit: catsdogs.uploads), its files are classified by the
Predictor, and the answer is written here. BentoML's API methods declare those routes (their
OpenAPI schema, Swagger UI, BentoML's clients); its generic input handling, which buffers the
body, writes a temporary file per upload and fetches URLs given as text, never sees them.
"""

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_origin

from pydantic import TypeAdapter
from starlette.responses import Response

from catsdogs.access import ApiKeys, RateLimits
from catsdogs.errors import TOO_LARGE, RefusedInput
from catsdogs.metrics import service_metrics
from catsdogs.predictor import Predictor
from catsdogs.schema import PredictionResponse
from catsdogs.settings import ServiceSettings
from catsdogs.uploads import UploadBody

request_logger = logging.getLogger("catsdogs.requests")
# python-multipart logs every malformed body it sees: a client could fill the log with them.
logging.getLogger("python_multipart").setLevel(logging.ERROR)

MAX_REQUEST_ID_LENGTH = 64
METRICS_PATH = "/metrics"
_ANSWER = TypeAdapter(PredictionResponse)
_ANSWERS = TypeAdapter(list[PredictionResponse])


def configure_request_logging() -> None:
    """One JSON object per line on stderr (service.py turns BentoML's access log off)."""
    if not request_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        request_logger.addHandler(handler)
        request_logger.setLevel(logging.INFO)
        request_logger.propagate = False


@dataclass(frozen=True)
class UploadRoute:
    path: str
    field: str  # the form field that holds the files
    many: bool  # a list of files (one answer each) rather than one file


def upload_routes(service: Any) -> dict[str, UploadRoute]:
    """The routes of a BentoML service whose API takes files, from the API definitions."""
    routes = {}
    for method in service.apis.values():
        fields = method.input_spec.multipart_fields
        if len(fields) != 1:
            continue
        [field] = fields
        annotation = method.input_spec.model_fields[field].annotation
        parts = (part.strip("/") for part in (service.path_prefix or "", method.route))
        path = "/" + "/".join(part for part in parts if part)
        routes[path] = UploadRoute(path, field, get_origin(annotation) is list)
    return routes


class RequestGuard:
    """ASGI middleware (BentoML's add_asgi_middleware): see the module docstring.

    predictor: returns the running service's Predictor, or None while its model loads (the
    middleware is made before the service). documents: GET paths answered here, because
    BentoML routes them itself ("/", "/docs.json"), each with a function making the response.
    """

    def __init__(
        self,
        app,
        routes: dict[str, UploadRoute],
        predictor: Callable[[], Predictor | None],
        settings: ServiceSettings,
        documents: dict[str, Callable[[], Response]] | None = None,
    ):
        self.app = app
        self.routes = routes
        self.predictor = predictor
        self.settings = settings
        self.documents = documents or {}
        self.api_keys = ApiKeys(settings.api_key_digests)
        self.metrics_keys = ApiKeys(settings.metrics_key_digests)
        self.rate_limits = RateLimits(settings.rate_limit, settings.rate_limit_storage)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        outcome = {"status": 500}

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                outcome["status"] = message["status"]
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", request_id.encode())]  # fmt: skip
            await send(message)

        path, method = scope["path"], scope["method"]
        try:
            if method == "POST" and path in self.routes:
                await self._answer_upload(self.routes[path], scope, receive, send_with_id, outcome)
            elif method == "GET" and path in self.documents:
                await self.documents[path]()(scope, receive, send_with_id)
            elif path == METRICS_PATH and self.metrics_keys.enabled:
                outcome["caller"] = await self._admit(
                    scope, send_with_id, outcome, self.metrics_keys
                )
                if outcome["caller"]:
                    await self.app(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            line = {
                "event": "request",
                "method": method,
                "path": path,
                "status": outcome["status"],
                "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                "request_id": request_id,
            }
            line |= {key: outcome[key] for key in ("reason", "caller") if outcome.get(key)}
            request_logger.info(json.dumps(line))

    async def _admit(self, scope, send, outcome, keys: ApiKeys) -> str | None:
        """The caller's name if its key is good, else None once a 401 is sent."""
        try:
            outcome["caller"] = keys.identify(scope["headers"])
            return outcome["caller"]
        except RefusedInput as refusal:
            await self._refuse(send, refusal, outcome)
            return None

    async def _answer_upload(self, route: UploadRoute, scope, receive, send, outcome) -> None:
        try:
            predictor = self.predictor()
            if predictor is None:
                raise RefusedInput(
                    "loading", "the model is loading; try again shortly", 503, retry_after_s=2
                )
            caller = self._caller(scope)
            outcome["caller"] = caller
            if self.rate_limits.enabled:  # room for one image before the body is read
                await self.rate_limits.check(caller, consume=False)
            files = await self._read_files(route, scope, receive)
            if self.rate_limits.enabled:
                await self.rate_limits.check(caller, images=len(files))
            answers, record = await predictor.predict(files, scope["state"]["request_id"])
        except RefusedInput as refusal:
            await self._refuse(send, refusal, outcome)
            return
        except ClientDisconnected:
            outcome["status"], outcome["reason"] = 400, "incomplete_body"
            return
        except Exception:  # a bug or a failing model, not the client's doing: a JSON 500
            request_logger.exception("request %s failed", scope["state"]["request_id"])
            failure = RefusedInput("internal_error", "the service failed; see its log", 500)
            await self._refuse(send, failure, outcome)
            return
        body = _ANSWERS.dump_json(answers) if route.many else _ANSWER.dump_json(answers[0])
        await _send_json(send, 200, body)
        record()  # after the answer: the client does not wait for metrics and records

    def _caller(self, scope) -> str:
        """Who the request counts against: its API key when keys are on, else its address."""
        if self.api_keys.enabled:
            return self.api_keys.identify(scope["headers"])
        client = scope.get("client")
        return f"address:{client[0]}" if client else "address:unknown"

    async def _refuse(self, send, refusal: RefusedInput, outcome) -> None:
        outcome["reason"] = refusal.reason
        service_metrics().rejected.labels(reason=refusal.reason).inc()
        await _send_refusal(send, refusal)

    async def _read_files(self, route: UploadRoute, scope, receive):
        max_files = self.settings.max_files if route.many else 1
        max_body = self.settings.max_body_bytes(max_files)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > max_body:  # refused before reading any of it
            raise _body_too_large(int(declared), max_body)
        body = UploadBody(
            headers.get(b"content-type", b""), route.field, max_files, self.settings.max_bytes
        )
        received = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > max_body:
                raise _body_too_large(received, max_body)
            body.feed(chunk)
            if not message.get("more_body", False):
                return body.finish()


class ClientDisconnected(Exception):
    """The client went away before its request body was complete: nothing to answer."""


def _body_too_large(size: int, limit: int) -> RefusedInput:
    return RefusedInput(
        "too_large", f"the request body of {size}+ bytes is over the limit of {limit}", TOO_LARGE
    )


def _request_id(scope) -> str:
    """The client's X-Request-Id if it is printable ASCII of a sane length, else a new one."""
    for name, value in scope.get("headers") or ():
        if name == b"x-request-id":
            if 0 < len(value) <= MAX_REQUEST_ID_LENGTH and all(33 <= b <= 126 for b in value):
                return value.decode("ascii")
            break
    return uuid.uuid4().hex


async def _send_refusal(send, refusal: RefusedInput) -> None:
    body = json.dumps({"error": str(refusal), "reason": refusal.reason}).encode()
    headers = []
    if refusal.retry_after_s is not None:
        headers.append((b"retry-after", str(refusal.retry_after_s).encode()))
    if refusal.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await _send_json(send, refusal.status, body, headers)


async def _send_json(send, status: int, body: bytes, headers=()) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()), *headers],
        }
    )  # fmt: skip
    await send({"type": "http.response.body", "body": body})
