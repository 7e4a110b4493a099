"""Smoke test a running catsdogs service: health, readiness and two known predictions.

    python scripts/smoke_test.py http://127.0.0.1:3000 [--cat PHOTO] [--dog PHOTO] [--wait 120]

Waits up to --wait seconds for GET /readyz to answer 200, then checks GET /health (200) and
POST /predict of a known cat photo (label "cat", as multipart form data) and a known dog photo
(label "dog", as the raw request body). Prints one line per failure and exits 1; prints a
short summary and exits 0 on success. Needs only httpx (`pip install httpx`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
# Committed sample photos (data/sample/) that the sample model classifies confidently.
DEFAULT_CAT = ROOT / "data" / "sample" / "cat" / "cat.102.jpg"
DEFAULT_DOG = ROOT / "data" / "sample" / "dog" / "dog.1.jpg"
REQUEST_TIMEOUT = 60.0  # seconds per request: a busy service may queue a prediction a while
# What a dead, closed or half-started service raises.
UNAVAILABLE = (httpx.TransportError, OSError)


class SmokeFailure(Exception):
    """One failed check, with a message meant for a human."""


API_KEY_HEADERS: dict[str, str] = {}  # set from --api-key


def request(url: str, **post) -> tuple[int, bytes]:
    """(status, body) of a GET, or of a POST when post has content or files. HTTP errors are
    answers, not exceptions; connection problems raise one of UNAVAILABLE."""
    headers = {**API_KEY_HEADERS, **post.pop("headers", {})}
    if post:
        response = httpx.post(url, timeout=REQUEST_TIMEOUT, headers=headers, **post)
    else:
        response = httpx.get(url, timeout=REQUEST_TIMEOUT, headers=headers)
    return response.status_code, response.content


def short(body: bytes, limit: int = 300) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return text if len(text) <= limit else text[:limit] + "..."


def wait_until_ready(base: str, wait: float) -> None:
    deadline = time.monotonic() + wait
    last = "no answer"
    while True:
        try:
            status, body = request(f"{base}/readyz")
            if status == 200:
                return
            last = f"/readyz answered {status}: {short(body)}"
        except UNAVAILABLE as error:
            last = f"{type(error).__name__}: {getattr(error, 'reason', error)}"
        if time.monotonic() >= deadline:
            raise SmokeFailure(
                f"service unavailable at {base}: not ready after {wait:g} s ({last})"
            )
        time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))


def check_get(base: str, path: str) -> None:
    try:
        status, body = request(f"{base}{path}")
    except UNAVAILABLE as error:
        raise SmokeFailure(f"service unavailable: GET {path} failed: {error}") from error
    if status != 200:
        raise SmokeFailure(f"GET {path} answered {status}, expected 200: {short(body)}")


def check_predict(base: str, photo: Path, expected: str, as_form: bool) -> dict:
    if as_form:
        upload = {"files": {"file": (photo.name, photo.read_bytes())}}
    else:
        upload = {"content": photo.read_bytes(), "headers": {"Content-Type": "image/jpeg"}}
    try:
        status, answer = request(f"{base}/predict", **upload)
    except UNAVAILABLE as error:
        raise SmokeFailure(
            f"service unavailable: POST /predict ({photo}) failed: {error}"
        ) from error
    if status != 200:
        raise SmokeFailure(f"/predict error for {photo}: status {status}: {short(answer)}")
    try:
        result = json.loads(answer)
        label = result["label"]
    except (ValueError, KeyError, TypeError) as error:
        raise SmokeFailure(
            f"/predict answered 200 without a label for {photo}: {short(answer)}"
        ) from error
    if label != expected:
        raise SmokeFailure(
            f"misclassified {photo}: expected {expected!r}, got {label!r} "
            f"(confidence {result.get('confidence')})"
        )
    return result


def run(base: str, cat: Path, dog: Path, wait: float) -> list[str]:
    """All checks; returns the failure messages (empty when every check passed)."""
    failures: list[str] = []
    for photo in (cat, dog):
        if not photo.is_file():
            failures.append(f"photo not found: {photo}")
    if failures:
        return failures
    try:
        wait_until_ready(base, wait)
    except SmokeFailure as failure:
        return [str(failure)]  # nothing else can pass
    started = time.monotonic()
    results = {}
    checks = [
        ("health", lambda: check_get(base, "/health")),
        ("readyz", lambda: check_get(base, "/readyz")),
        ("cat", lambda: check_predict(base, cat, "cat", as_form=True)),
        ("dog", lambda: check_predict(base, dog, "dog", as_form=False)),
    ]
    for name, check in checks:
        try:
            results[name] = check()
        except SmokeFailure as failure:
            failures.append(str(failure))
    if not failures:
        elapsed = time.monotonic() - started
        model = results["cat"].get("model", "?")
        print(
            f"smoke test passed: {base} model={model} "
            f"cat={results['cat']['confidence']:.3f} dog={results['dog']['confidence']:.3f} "
            f"({elapsed:.1f} s)"
        )
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="base URL of the service, e.g. http://127.0.0.1:3000")
    parser.add_argument("--cat", type=Path, default=DEFAULT_CAT, help="a photo of a cat")
    parser.add_argument("--dog", type=Path, default=DEFAULT_DOG, help="a photo of a dog")
    parser.add_argument(
        "--wait", type=float, default=120.0, help="seconds to wait for /readyz (default 120)"
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("CATSDOGS_API_KEY"),
        help="the service's API key, when keys are on (default: $CATSDOGS_API_KEY)",
    )
    args = parser.parse_args(argv)
    if args.api_key:
        API_KEY_HEADERS["Authorization"] = f"Bearer {args.api_key}"
    failures = run(args.url.rstrip("/"), args.cat, args.dog, args.wait)
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
