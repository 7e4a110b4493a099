"""API keys, rate limits and CORS, on a real `bentoml serve` with all three on: two workers
sharing their rate limits through a real Redis (Debian's redis-server, started here)."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from helpers import (
    ROOT,
    free_port,
    photos,
    process_group,
    run_bentoml_serve,
    run_locust,
    run_smoke_test,
    wait_until,
)

KEY = "shelter-volunteer-key-0001"
HASHED_KEY = "hashed-only-key-for-the-app-02"  # the server only ever sees its digest
RATE_KEY = "rate-limited-key-for-tests-003"
METRICS_KEY = "prometheus-scraper-key-0004"
LOAD_KEY = "load-test-key-for-locust-0005"
CORS_KEY = "browser-page-key-for-cors-006"
SMOKE_KEY = "smoke-test-key-for-deploys-07"
OTHER_ORIGIN = "https://elsewhere.example"
ORIGIN = "https://shelter.example"
RATE_LIMIT = 6  # images per minute per key

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server is not installed (.ci/run installs Debian's redis-server)",
)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(workdir)]  # fmt: skip
    with process_group(command, workdir / "redis.log"):
        wait_until(
            lambda: (
                subprocess.run(
                    ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True
                ).stdout.strip()
                == "PONG"
            ),
            30,
            "redis-server answering",
        )
        yield f"redis://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def secured(trained_model, tmp_path_factory, redis_url):
    workdir = tmp_path_factory.mktemp("secured")
    keys = workdir / "api_keys"
    digest = hashlib.sha256(HASHED_KEY.encode()).hexdigest()
    plain = [KEY, RATE_KEY, LOAD_KEY, CORS_KEY, SMOKE_KEY]
    keys.write_text("# one key per line\n" + "\n".join([*plain, f"sha256:{digest}", ""]) + "\n")
    with run_bentoml_serve(
        "service:CatsDogs",
        workdir,
        trained_model.registered.bento_tag,
        CATSDOGS_WORKERS="2",
        CATSDOGS_API_KEYS_FILE=str(keys),
        CATSDOGS_METRICS_KEYS=METRICS_KEY,
        CATSDOGS_RATE_LIMIT=f"{RATE_LIMIT}/minute",
        CATSDOGS_RATE_LIMIT_STORAGE=redis_url,
        CATSDOGS_CORS_ORIGINS=f"{ORIGIN}, https://other-shelter.example",
    ) as running:
        yield running


def _predict(url: str, headers: dict | None = None, path: str = "/predict", count: int = 1):
    files = [("file", (p.name, p.read_bytes())) for p in photos("cat")[:count]]
    return httpx.post(f"{url}{path}", files=files, headers=headers or {}, timeout=120)


def _refused(response: httpx.Response, status: int, reason: str) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert body["reason"] == reason and body["error"], body
    return body


def test_predictions_need_a_valid_key(secured):
    response = _predict(secured.url)
    _refused(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    _refused(_predict(secured.url, {"Authorization": "Bearer not-a-key-at-all-00"}), 401,
             "unauthorized")  # fmt: skip
    _refused(_predict(secured.url, {"X-API-Key": KEY + "x"}), 401, "unauthorized")
    _refused(_predict(secured.url, {"Authorization": f"Basic {KEY}"}), 401, "unauthorized")
    for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY},
                    {"Authorization": f"bearer {HASHED_KEY}"}):  # fmt: skip
        response = _predict(secured.url, headers, "/predict_batch", count=2)
        assert response.status_code == 200, (headers, response.text)
        assert [answer["label"] for answer in response.json()] == ["cat", "cat"]


def test_health_and_readiness_stay_open_and_metrics_have_their_own_keys(secured):
    for path in ("/health", "/livez", "/readyz", "/healthz", "/docs", "/docs.json"):
        assert httpx.get(f"{secured.url}{path}", timeout=30).status_code == 200, path
    _refused(httpx.get(f"{secured.url}/metrics", timeout=30), 401, "unauthorized")
    api_key = {"Authorization": f"Bearer {KEY}"}
    _refused(httpx.get(f"{secured.url}/metrics", headers=api_key, timeout=30), 401,
             "unauthorized")  # fmt: skip
    scraper = {"Authorization": f"Bearer {METRICS_KEY}"}
    metrics = httpx.get(f"{secured.url}/metrics", headers=scraper, timeout=30)
    assert metrics.status_code == 200 and "catsdogs_rejected_inputs_total" in metrics.text
    assert 'reason="unauthorized"' in metrics.text


def test_the_logs_name_the_key_but_never_hold_it(secured):
    _predict(secured.url, {"X-API-Key": KEY})
    log = secured.log()
    assert KEY not in log and HASHED_KEY not in log
    digest = hashlib.sha256(KEY.encode()).hexdigest()[:12]
    assert any(line.get("caller") == f"key:{digest}" for line in secured.request_logs())


def test_rate_limits_count_images_per_key_across_workers(secured, redis_url):
    headers = {"X-API-Key": RATE_KEY}
    answered = [_predict(secured.url, headers).status_code for _ in range(RATE_LIMIT - 2)]
    assert answered == [200] * (RATE_LIMIT - 2)
    # Two images left this minute: a batch of three does not fit, then two do.
    refused = _refused(_predict(secured.url, headers, "/predict_batch", count=3), 429,
                       "rate_limited")  # fmt: skip
    assert "try again" in refused["error"]
    assert _predict(secured.url, headers, "/predict_batch", count=2).status_code == 200
    limited = _predict(secured.url, headers)
    _refused(limited, 429, "rate_limited")
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    # Each key has its own count, kept in Redis where both workers see it.
    assert _predict(secured.url, {"X-API-Key": CORS_KEY}).status_code == 200
    port = redis_url.rsplit(":", 1)[1]
    stored = subprocess.run(["redis-cli", "-p", port, "--scan"], capture_output=True, text=True)
    assert stored.stdout.strip(), "no rate-limit counts in Redis"
    assert RATE_KEY not in stored.stdout  # counted under the key's digest, not the key
    assert len(secured.worker_pids()) == 2


def test_cors_allows_the_listed_origins_only(secured):
    preflight = httpx.options(
        f"{secured.url}/predict",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
        timeout=30,
    )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    answer = _predict(secured.url, {"Origin": ORIGIN, "X-API-Key": CORS_KEY})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    refused = _predict(secured.url, {"Origin": ORIGIN})  # a refusal carries them too
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN
    stranger = _predict(secured.url, {"Origin": OTHER_ORIGIN, "X-API-Key": CORS_KEY})
    assert "access-control-allow-origin" not in stranger.headers


def test_the_smoke_test_works_with_keys(secured):
    result = run_smoke_test(secured.url, "--api-key", SMOKE_KEY)
    assert result.returncode == 0, result.stderr
    without = run_smoke_test(secured.url, "--wait", "5")
    assert without.returncode == 1 and "401" in without.stderr


def test_the_load_test_works_with_keys(secured, tmp_path):
    # One slow user: a few uploads, within the key's rate limit.
    slow = ["-u", "1", "-r", "1", "--wait-min", "1.5", "--wait-max", "1.5"]
    result = run_locust(secured.url, tmp_path, "4s", *slow, "--api-key", LOAD_KEY)
    assert result.returncode == 0, result.stdout[-3000:]
    summary = json.loads((tmp_path / "locust_summary.json").read_text())["measured"]
    assert summary["predict_requests"] >= 2 and summary["failures"] == 0
    refused = run_locust(secured.url, tmp_path / "no-key", "3s", *slow)
    assert refused.returncode == 1 and "HTTP 401 unauthorized" in refused.stdout


def test_a_bad_key_file_stops_the_service_with_one_line(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("short\n")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "bentoml"), "serve", "service:CatsDogs",
         "--port", str(free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "CATSDOGS_API_KEYS_FILE": str(keys),
             "BENTOML_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("catsdogs: invalid setting CATSDOGS_API_KEYS")
    assert "16" in line
