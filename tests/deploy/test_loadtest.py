"""loadtests/locustfile.py: a short, real locust run against the session's `bentoml serve` passes
its thresholds and writes CSV, HTML and JSON reports; an impossible latency bar makes it exit 1
naming the broken threshold; wrong answers from a stand-in server count as failed requests
while wrong labels count as misclassifications; a photo folder without photos stops it early.

Locust runs in a subprocess only: importing it here would monkey-patch the pytest process with
gevent. Every run is bounded (a few users, a few seconds) and talks to loopback only."""

import csv
import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from helpers import run_locust, serve_in_thread


def stats_rows(reports: Path) -> dict[str, dict[str, str]]:
    with (reports / "locust_stats.csv").open(newline="") as handle:
        return {row["Name"]: row for row in csv.DictReader(handle)}


def test_short_run_passes_and_writes_reports(server, tmp_path):
    result = run_locust(server.url, tmp_path, "8s")
    output = result.stdout
    assert result.returncode == 0, output[-4000:]
    assert "Load test summary" in output and "Load test passed" in output, output[-4000:]
    assert "THRESHOLD BROKEN" not in output

    assert (tmp_path / "locust.html").stat().st_size > 0
    assert "/predict" in (tmp_path / "locust.html").read_text()
    predict = stats_rows(tmp_path)["/predict"]
    assert predict["Type"] == "POST"
    assert int(predict["Request Count"]) > 0
    assert int(predict["Failure Count"]) == 0
    with (tmp_path / "locust_failures.csv").open(newline="") as handle:
        assert list(csv.DictReader(handle)) == []

    summary = json.loads((tmp_path / "locust_summary.json").read_text())
    assert summary["passed"] is True and summary["broken"] == []
    measured = summary["measured"]
    assert measured["predict_requests"] >= int(predict["Request Count"])
    assert measured["failures"] == 0
    assert 0 < measured["p50_ms"] <= measured["p95_ms"] <= measured["p99_ms"] <= 1000
    # Every answer was checked: the sample model labels most of its own training photos right.
    assert measured["classified"] == measured["predict_requests"]
    assert measured["misclassified_ratio"] < 0.5
    assert summary["thresholds"] == {
        "max_fail_ratio": 0.01,
        "max_p95_ms": 500.0,
        "max_p99_ms": 1000.0,
        "max_misclassified_ratio": None,
    }


def test_an_impossible_latency_bar_fails_the_run(server, tmp_path):
    result = run_locust(server.url, tmp_path, "5s", "--max-p95-ms", "0.001")
    output = result.stdout
    assert result.returncode == 1, output[-4000:]
    assert "THRESHOLD BROKEN: p95 latency of /predict" in output, output[-4000:]
    assert "--max-p95-ms 0.001 ms" in output
    assert "Load test FAILED: 1 threshold(s) broken" in output
    # The requests themselves were fine: only the latency bar broke.
    assert int(stats_rows(tmp_path)["/predict"]["Failure Count"]) == 0
    summary = json.loads((tmp_path / "locust_summary.json").read_text())
    assert summary["passed"] is False
    assert [message.split(" ")[0] for message in summary["broken"]] == ["p95"]


class StandIn(BaseHTTPRequestHandler):
    """A stand-in for the service that answers every upload with the same JSON body."""

    body: bytes = b"{}"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def stand_in(answer: dict):
    handler = type("Answer", (StandIn,), {"body": json.dumps(answer).encode()})
    return serve_in_thread(handler)


def test_answers_without_a_cat_or_dog_label_are_failures(tmp_path):
    with stand_in({"label": "horse", "confidence": 0.9}) as url:
        result = run_locust(url, tmp_path, "3s")
    output = result.stdout
    assert result.returncode == 1, output[-4000:]
    assert "THRESHOLD BROKEN: failure ratio 100.00%" in output, output[-4000:]
    predict = stats_rows(tmp_path)["/predict"]
    assert int(predict["Failure Count"]) == int(predict["Request Count"]) > 0
    with (tmp_path / "locust_failures.csv").open(newline="") as handle:
        errors = [row["Error"] for row in csv.DictReader(handle)]
    assert len(errors) == 1 and '200 with label "horse", not cat, dog or other' in errors[0], errors


def test_wrong_labels_are_misclassifications_not_failures(tmp_path):
    # Always "cat": every dog photo is misclassified, yet each request is a valid answer.
    with stand_in({"label": "cat", "confidence": 0.9}) as url:
        reported = run_locust(url, tmp_path / "reported", "3s")
        enforced = run_locust(url, tmp_path / "enforced", "3s", "--max-misclassified-ratio", "0.1")
    assert reported.returncode == 0, reported.stdout[-4000:]
    measured = json.loads((tmp_path / "reported" / "locust_summary.json").read_text())["measured"]
    assert measured["failures"] == 0
    assert 0 < measured["misclassified"] < measured["classified"]
    assert enforced.returncode == 1, enforced.stdout[-4000:]
    assert "THRESHOLD BROKEN: misclassified ratio" in enforced.stdout


def test_a_folder_without_photos_stops_before_any_request(tmp_path):
    photos = tmp_path / "photos"
    (photos / "cat").mkdir(parents=True)  # no dog/ at all, and cat/ empty
    result = run_locust("http://127.0.0.1:9", tmp_path / "reports", "3s", photos=photos)
    assert result.returncode == 2, result.stdout[-4000:]
    assert "need photos in both cat/ and dog/" in result.stdout
    assert "Ramping" not in result.stdout  # no user was started
