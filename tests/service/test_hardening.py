"""What a fuzzing and fault session broke, each reproduced against a real `bentoml serve`:
URL fetching from text fields, malformed multipart bodies, a non-UTF-8 request id, metric
labels from arbitrary paths, a small file that decodes to gigabytes, oversized and truncated
bodies, uploads left on disk, and a killed worker."""

import http.server
import io
import json
import os
import select
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import bentoml
import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from helpers import (
    multipart_body,
    peak_memory_mib,
    photos,
    run_bentoml_serve,
    wait_for_ready,
    wait_until,
)

TIMEOUT = 120


def _post(url: str, path: str = "/predict", **kwargs) -> httpx.Response:
    return httpx.post(f"{url}{path}", timeout=TIMEOUT, **kwargs)


def _refused(response: httpx.Response, status: int, reason: str) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["reason"] == reason and body["error"], body
    return body


def _exchange(url: str, request: bytes, timeout: float = 30) -> bytes:
    """Send raw bytes to the server, return everything it answers until it closes."""
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=timeout) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _outbound_address() -> str:
    """This machine's address on its default route (no packet is sent), else loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


@pytest.fixture
def photo_server():
    """An HTTP server, on every interface, that counts the requests it gets."""
    hits: list[str] = []
    photo = photos("cat")[0].read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            self.wfile.write(photo)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://{_outbound_address()}:{httpd.server_address[1]}/cat.jpg", hits
    finally:
        httpd.shutdown()
        httpd.server_close()


# --- 1. nothing a client sends makes the service open a connection --------------------------


def test_a_url_in_a_text_field_is_refused_and_never_fetched(server, photo_server):
    url, hits = photo_server
    # A multipart text field (no file name), as `curl -F file=http://...` sends it.
    _refused(_post(server.url, files={"file": (None, url)}), 400, "not_a_file")
    texts = [("file", (None, url)), ("file", (None, url))]
    _refused(_post(server.url, "/predict_batch", files=texts), 400, "not_a_file")
    _refused(_post(server.url, data={"file": url}), 400, "not_multipart")  # a urlencoded form
    # BentoML's own client sends a string for a file parameter as a form value: with no file
    # beside it, a urlencoded form.
    with (
        bentoml.SyncHTTPClient(server.url) as client,
        pytest.raises(bentoml.exceptions.InvalidArgument, match="not_multipart"),
    ):
        client.predict(file=url)
    time.sleep(1)  # a fetch, had one started, would have arrived by now
    assert hits == []


# --- 2. malformed multipart bodies: a 4xx with a JSON reason ---------------------------------


def test_malformed_multipart_bodies_get_a_json_4xx(server):
    photo = photos("cat")[0].read_bytes()
    _refused(_post(server.url, files={"file": (None, "hello")}), 400, "not_a_file")
    _refused(_post(server.url, "/predict_batch", json={}), 400, "not_multipart")
    body, content_type = multipart_body([("a.jpg", photo)], boundary="b" * 300)
    response = _post(server.url, content=body, headers={"Content-Type": content_type})
    _refused(response, 400, "bad_multipart")
    body, content_type = multipart_body([("a.jpg", photo)])
    response = _post(server.url, content=body[:-20], headers={"Content-Type": content_type})
    _refused(response, 400, "bad_multipart")  # no closing boundary
    parts = [(f"{index}.jpg", b"x") for index in range(1001)]
    body, content_type = multipart_body(parts)
    response = _post(server.url, "/predict_batch", content=body,
                     headers={"Content-Type": content_type})  # fmt: skip
    _refused(response, 413, "too_many_files")
    texts = [("file", (None, str(index))) for index in range(1001)]
    _refused(_post(server.url, "/predict_batch", files=texts), 400, "not_a_file")


def test_a_long_file_name_is_just_a_name(server):
    photo = photos("cat")[0]
    response = _post(server.url, files={"file": ("x" * 300 + ".jpg", photo.read_bytes())})
    assert response.status_code == 200, response.text
    assert response.json()["label"] == "cat"


# --- 3. any header value is handled; the request id is sanitised -----------------------------


@pytest.mark.parametrize("value", [b"\xff\xfe", b"a" * 200, b"has space", b""])
def test_a_bad_request_id_is_replaced_and_logged(server, value):
    answer = _exchange(
        server.url,
        b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Request-Id: " + value + b"\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert _status(answer) == 200, answer[:200]
    headers = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower().splitlines()
    [request_id] = [line.split(": ", 1)[1] for line in headers if line.startswith("x-request-id")]
    assert len(request_id) == 32 and all(c in "0123456789abcdef" for c in request_id)
    wait_until(
        lambda: any(line["request_id"] == request_id for line in server.request_logs()),
        30,
        f"a request log line for {request_id}",
    )


# --- 4. /metrics: labels from a bounded set ---------------------------------------------------


def _endpoints(url: str) -> set[str]:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return {
        sample.labels["endpoint"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "endpoint" in sample.labels
    }


def test_unknown_paths_share_one_metric_label(server):
    before = len(httpx.get(f"{server.url}/metrics", timeout=30).content)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for index in range(300):
            client.request(
                ("GET", "POST", "PUT")[index % 3], f"/probe/{index}/{os.urandom(4).hex()}"
            )
            client.get(f"/static_content/missing{index}.css")
    endpoints = _endpoints(server.url)
    assert "/{other}" in endpoints and "/static_content/{path}" in endpoints
    assert not [endpoint for endpoint in endpoints if endpoint.startswith("/probe/")]
    assert len(endpoints) < 20, endpoints
    after = len(httpx.get(f"{server.url}/metrics", timeout=30).content)
    assert after - before < 20_000, (before, after)  # a few new series, not one per path


# --- 6. each route's body cap, refused before the body is read -------------------------------


def test_a_body_over_the_route_cap_is_refused_from_its_length(server):
    # 321 MB announced, nothing sent: the answer comes without waiting for the body.
    answer = _exchange(
        server.url,
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: 321000000\r\nConnection: close\r\n\r\n",
    )
    assert _status(answer) == 413, answer[:300]
    assert b'"too_large"' in answer


def test_a_chunked_body_is_cut_off_at_the_cap(server):
    # No Content-Length: the server counts while it reads, and answers 413 once the body
    # passes the route's cap, while the client is still sending.
    address = urlsplit(server.url)
    chunk = b"\xff" * (1 << 20)
    sent = 0
    with socket.create_connection((address.hostname, address.port), timeout=30) as conn:
        conn.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
        while sent < 200 << 20 and not select.select([conn], [], [], 0)[0]:
            conn.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        answer = conn.recv(65536)
    assert _status(answer) == 413, answer[:300]
    assert b'"too_large"' in answer
    assert sent < 100 << 20, f"the server read {sent} bytes before refusing"


# --- 7. a body cut short does no model work and is logged as such ----------------------------


def _predictions_total(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "catsdogs_predictions_total"
    )


def test_a_truncated_body_is_logged_and_not_classified(server):
    body, content_type = multipart_body([("cat.jpg", photos("cat")[0].read_bytes())])
    assert len(body) > 1000
    before = _predictions_total(server.url)
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as conn:
        head = (
            f"POST /predict HTTP/1.1\r\nHost: x\r\nX-Request-Id: cut-short\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body) + 100_000}\r\n\r\n"
        )
        conn.sendall(head.encode() + body)
    [line] = wait_until(
        lambda: [line for line in server.request_logs() if line["request_id"] == "cut-short"],
        30,
        "the truncated request's log line",
    )
    assert (line["status"], line["reason"]) == (400, "incomplete_body")
    assert _predictions_total(server.url) == before


# --- 5, 8, 11. resources and faults, on a server of their own --------------------------------


@pytest.fixture(scope="module")
def own_server(trained_model, tmp_path_factory):
    """A fresh server (its memory untouched by other tests), with its temporary folder inside
    the test's folder so that files it writes there can be seen."""
    workdir = tmp_path_factory.mktemp("own-server")
    scratch = workdir / "tmp"
    scratch.mkdir()
    tag = trained_model.registered.bento_tag
    with run_bentoml_serve("service:CatsDogs", workdir, tag, TMPDIR=str(scratch)) as running:
        yield running, scratch


def _wide_png() -> bytes:
    """A 16-bit grayscale PNG of 6000x6000 pixels that compresses to a few dozen KB."""
    pixels = np.zeros((6000, 6000), np.uint16)
    pixels[::7, ::3] = 40_000
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def test_heavy_decodes_are_bounded_and_do_not_hold_up_small_photos(own_server):
    server, _ = own_server
    [worker] = server.worker_pids()
    heavy = _wide_png()
    assert len(heavy) < 200_000
    photo = photos("dog")[0].read_bytes()
    finished: list[str] = []
    memory_before = peak_memory_mib(worker)

    def send(name: str, data: bytes) -> int:
        status = _post(server.url, files={"file": (name, data)}).status_code
        finished.append(name)
        return status

    with ThreadPoolExecutor(17) as pool:
        heavies = [pool.submit(send, f"heavy{index}", heavy) for index in range(16)]
        time.sleep(0.5)  # the heavy ones are in: the small photo comes after them
        small = pool.submit(send, "small", photo)
        assert small.result() == 200
        assert [future.result() for future in heavies] == [200] * 16
    # Heavy images decode one at a time on a thread of their own: the small photo is
    # answered while most of them still wait.
    assert finished.index("small") < 8, finished
    grown = peak_memory_mib(worker) - memory_before
    print(f"worker peak memory grew by {grown:.0f} MiB for 16 concurrent 36 MP 16-bit PNGs")
    assert grown < 1024, f"worker peak memory grew by {grown:.0f} MiB"


def test_uploads_never_touch_the_disk(own_server):
    server, scratch = own_server
    before = set(scratch.rglob("*"))
    files = [("file", (path.name, path.read_bytes())) for path in photos("cat")[:8]]
    response = _post(server.url, "/predict_batch", files=files)
    assert response.status_code == 200, response.text
    _post(server.url, files={"file": ("bad.jpg", b"not an image")})
    assert set(scratch.rglob("*")) == before


def test_a_killed_worker_is_replaced_and_readiness_says_so(own_server):
    server, _ = own_server
    [worker] = server.worker_pids()
    killed = time.monotonic()
    os.kill(worker, signal.SIGKILL)
    seen = []

    def ready_again() -> bool:
        try:
            status = httpx.get(f"{server.url}/readyz", timeout=0.5).status_code
        except httpx.TransportError as error:
            status = type(error).__name__
        seen.append(status)
        return status == 200 and server.worker_pids() not in ([], [worker])

    wait_until(ready_again, 120, "a replacement worker ready", interval=0.2)
    recovery = time.monotonic() - killed
    print(f"replacement worker ready {recovery:.1f} s after kill -9; probes saw {set(seen)}")
    assert any(status != 200 for status in seen)  # never "ready" while nothing could answer
    wait_for_ready(f"{server.url}/readyz")
    response = _post(server.url, files={"file": ("cat.jpg", photos("cat")[0].read_bytes())})
    assert response.status_code == 200, response.text


# --- 9, 10. the docs: no outside requests (test_browser.py), every answer documented ----------


def test_openapi_documents_every_answer_of_the_upload_routes(server):
    document = httpx.get(f"{server.url}/docs.json", timeout=30).json()
    for path in ("/predict", "/predict_batch"):
        operation = document["paths"][path]["post"]
        assert {"200", "400", "401", "413", "429", "503"} <= set(operation["responses"]), path
        assert {"multipart/form-data", "image/*"} <= set(operation["requestBody"]["content"])
    text = json.dumps(document)
    assert "shields.io" not in text and "googletagmanager" not in text
