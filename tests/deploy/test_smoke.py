"""scripts/smoke_test.py, run as CI and CD run it: a subprocess against real servers."""

import http.server
import json

import pytest

from helpers import SAMPLE_DIR, free_port, run_smoke_test, serve_in_thread

CAT = SAMPLE_DIR / "cat" / "cat.102.jpg"
DOG = SAMPLE_DIR / "dog" / "dog.1.jpg"


def test_defaults_are_committed_sample_photos():
    assert CAT.is_file()
    assert DOG.is_file()


def test_passes_against_the_real_service(server):
    result = run_smoke_test(server.url)
    assert result.returncode == 0, result.stderr
    assert "smoke test passed" in result.stdout
    assert server.model_tag in result.stdout
    assert result.stderr == ""


def test_explicit_photos_pass(server):
    result = run_smoke_test(server.url, "--cat", str(CAT), "--dog", str(DOG), "--wait", "10")
    assert result.returncode == 0, result.stderr


def test_misclassification_fails(server):
    # A dog photo given as the cat: the service answers "dog", so the check must fail.
    result = run_smoke_test(server.url, "--cat", str(DOG))
    assert result.returncode != 0
    assert "misclassified" in result.stderr
    assert str(DOG) in result.stderr
    assert "expected 'cat', got 'dog'" in result.stderr
    # Exactly one failure: the dog check still passed.
    assert result.stderr.count("FAIL:") == 1


def test_missing_photo_fails(server, tmp_path):
    result = run_smoke_test(server.url, "--dog", str(tmp_path / "nope.jpg"))
    assert result.returncode != 0
    assert "photo not found" in result.stderr


def test_closed_port_is_unavailable():
    result = run_smoke_test(f"http://127.0.0.1:{free_port()}", "--wait", "2", timeout=120)
    assert result.returncode != 0
    assert "unavailable" in result.stderr
    assert result.stderr.count("FAIL:") == 1
    assert "passed" not in result.stdout


class FakeService(http.server.BaseHTTPRequestHandler):
    """Healthy and ready, but /predict fails with a 500 and a JSON body."""

    def do_GET(self):
        self._answer(200, {"status": "ok"})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/predict":
            self._answer(500, {"error": "model exploded"})
        else:
            self._answer(404, {"error": "not found"})

    def _answer(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def fake_service():
    with serve_in_thread(FakeService) as url:
        yield url


def test_predict_error_reports_status_and_body(fake_service):
    result = run_smoke_test(fake_service, "--wait", "10", timeout=120)
    assert result.returncode != 0
    assert "/predict error" in result.stderr
    assert "status 500" in result.stderr
    assert "model exploded" in result.stderr
    assert result.stderr.count("FAIL:") == 2  # the cat and the dog


def test_not_ready_service_is_unavailable(fake_service, monkeypatch):
    # /readyz answering 503 for the whole wait counts as unavailable too.
    monkeypatch.setattr(FakeService, "do_GET", lambda self: self._answer(503, {"ready": False}))
    result = run_smoke_test(fake_service, "--wait", "2", timeout=120)
    assert result.returncode != 0
    assert "unavailable" in result.stderr
    assert "503" in result.stderr
