"""Who may call the API and how often: optional API keys and rate limits.

API keys come from CATSDOGS_API_KEYS (comma-separated) and/or a file, CATSDOGS_API_KEYS_FILE
(one per line; a Kubernetes or Compose secret mounted as a file), each either the key itself or
`sha256:<hex digest>` of it, so that a secret need not hold the keys. Only digests are kept;
a presented key (`Authorization: Bearer KEY` or `X-API-Key: KEY`) is hashed and compared with
every stored digest in constant time. /metrics can have keys of its own (CATSDOGS_METRICS_KEYS,
CATSDOGS_METRICS_KEYS_FILE). Health and readiness stay open.

Rate limits (CATSDOGS_RATE_LIMIT, the `limits` library's notation, e.g. "20/second;600/minute")
count images per API key, or per client address without keys, in memory for one replica or in
Redis (CATSDOGS_RATE_LIMIT_STORAGE=redis://host:6379) when replicas share them.
"""

import hashlib
import hmac
import logging
import math
import time
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from pathlib import Path

from limits import parse_many
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from catsdogs.errors import RefusedInput

logger = logging.getLogger("catsdogs.access")

DIGEST_PREFIX = "sha256:"
MIN_KEY_LENGTH = 16  # shorter keys are too easy to guess


class KeyConfigError(ValueError):
    """A key or key file that cannot be used (the service refuses to start)."""


def read_keys(keys: Iterable[str], key_file: Path | None) -> frozenset[bytes]:
    """The SHA-256 digests of the configured keys (keys given as text, or lines of key_file)."""
    lines = list(keys)
    if key_file is not None:
        try:
            lines += key_file.read_text().splitlines()
        except OSError as error:
            raise KeyConfigError(f"cannot read the key file {key_file}: {error}") from None
    digests = set()
    for line in (line.strip() for line in lines):
        if not line or line.startswith("#"):
            continue
        if line.startswith(DIGEST_PREFIX):
            digest = line.removeprefix(DIGEST_PREFIX).lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise KeyConfigError(f"{DIGEST_PREFIX} must be followed by 64 hex digits")
            digests.add(bytes.fromhex(digest))
        elif len(line) < MIN_KEY_LENGTH:
            raise KeyConfigError(f"an API key has {len(line)} characters; use {MIN_KEY_LENGTH}+")
        else:
            digests.add(hashlib.sha256(line.encode()).digest())
    return frozenset(digests)


class ApiKeys:
    """Checks the key a request presents against the configured digests."""

    def __init__(self, digests: frozenset[bytes]):
        self.digests = digests

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def identify(self, headers: Sequence[tuple[bytes, bytes]]) -> str:
        """A short, non-secret name for the caller's key; raises a 401 RefusedInput."""
        presented = _presented_key(headers)
        if presented is None:
            raise _unauthorized("this API needs a key: send `Authorization: Bearer KEY`")
        digest = hashlib.sha256(presented).digest()
        # Every stored digest is compared, so the time taken says nothing about which matched.
        matched = False
        for stored in self.digests:
            matched |= hmac.compare_digest(digest, stored)
        if not matched:
            raise _unauthorized("the API key is not valid")
        return "key:" + digest.hex()[:12]


def _presented_key(headers: Sequence[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"x-api-key" and value:
            return value.strip()
        if name == b"authorization":
            scheme, _, credentials = value.partition(b" ")
            if scheme.lower() == b"bearer" and credentials.strip():
                return credentials.strip()
    return None


def _unauthorized(message: str) -> RefusedInput:
    return RefusedInput("unauthorized", message, HTTPStatus.UNAUTHORIZED)


class RateLimits:
    """Images per caller per window, with the `limits` library (moving windows)."""

    def __init__(self, spec: str, storage_uri: str = "memory://"):
        self.items = parse_many(spec) if spec.strip() else []
        self._limiter = None
        if self.items:
            options = {"implementation": "redispy"} if storage_uri.startswith("redis") else {}
            storage = storage_from_string(f"async+{storage_uri}", **options)
            self._limiter = MovingWindowRateLimiter(storage)

    @property
    def enabled(self) -> bool:
        return self._limiter is not None

    async def check(self, caller: str, images: int = 1, consume: bool = True) -> None:
        """Count `images` against every limit (consume=False only tests for room); raises a
        429 RefusedInput with Retry-After when a limit has no room for them."""
        for item in self.items:
            try:
                if consume:
                    allowed = await self._limiter.hit(item, caller, cost=images)
                else:
                    allowed = await self._limiter.test(item, caller, cost=images)
                if allowed:
                    continue
                stats = await self._limiter.get_window_stats(item, caller)
            except Exception as error:  # the storage is down: serve rather than refuse
                logger.warning("rate limit storage unavailable, not limiting: %s", error)
                return
            wait = max(1, math.ceil(stats.reset_time - time.time()))
            raise RefusedInput(
                "rate_limited",
                f"rate limit {item} reached; try again in {wait} s",
                HTTPStatus.TOO_MANY_REQUESTS,
                retry_after_s=wait,
            )
