"""What the running service tells its operators, against a real `bentoml serve` with 2 worker
processes (each with its own model and adaptive batcher): Prometheus metrics aggregated over
the workers, request logs, prediction logs.

Prediction metrics and prediction logs are written in a background task right after the
response is sent, so checks on them poll briefly (RECORDED_WITHIN) for the values to appear."""

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import labelled_photos, photo_dir, wait_until

TIMEOUT = 120
BURST = 48
THREADS = 24
SCRAPES = 6  # each may be answered by either worker
RECORDED_WITHIN = 5.0  # seconds for a response's background task to record its prediction


def _predict(url: str, data: bytes, name: str = "photo.jpg", **kwargs) -> httpx.Response:
    return httpx.post(f"{url}/predict", files={"file": (name, data)}, timeout=TIMEOUT, **kwargs)


def _scrape(url: str) -> list:
    response = httpx.get(f"{url}/metrics", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return [
        sample
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


def _total(samples: list, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels` (over all workers and
    any other labels)."""
    return sum(
        sample.value
        for sample in samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def _scrape_until(url: str, done, what: str) -> list:
    """The first scrape for which done(samples) holds, polling for up to RECORDED_WITHIN
    seconds; fails saying `what` was not recorded."""

    def scrape_if_done() -> list | None:
        samples = _scrape(url)
        return samples if done(samples) else None

    return wait_until(scrape_if_done, RECORDED_WITHIN, f"{what} recorded", interval=0.1)


def _settled_scrape(url: str) -> list:
    """A scrape once the background tasks of earlier responses have recorded their
    predictions: two scrapes in a row agree on the prediction count."""
    counts: list[float] = []

    def unchanged(samples: list) -> bool:
        counts.append(_total(samples, "catsdogs_predictions_total"))
        return len(counts) > 1 and counts[-1] == counts[-2]

    return _scrape_until(url, unchanged, "a settled prediction count")


def _batches(samples: list) -> tuple[float, float]:
    """(all batches, batches of one) in the service's adaptive batch size histogram."""
    name = "catsdogs_batch_size"
    singles = sum(
        sample.value
        for sample in samples
        if sample.name == f"{name}_bucket" and float(sample.labels["le"]) == 1.0
    )
    return _total(samples, f"{name}_count"), singles


def _burst(url: str, photos: list[tuple[Path, str]]) -> list[httpx.Response]:
    barrier = threading.Barrier(THREADS)

    def send(chunk: list[tuple[Path, str]]) -> list[httpx.Response]:
        barrier.wait(timeout=TIMEOUT)  # every thread starts at once
        return [_predict(url, path.read_bytes(), path.name) for path, _ in chunk]

    chunks = [photos[i::THREADS] for i in range(THREADS)]
    with ThreadPoolExecutor(THREADS) as pool:
        answered = list(pool.map(send, chunks))
    by_photo = {}
    for chunk, responses in zip(chunks, answered, strict=True):
        by_photo.update(
            {path: response for (path, _), response in zip(chunk, responses, strict=True)}
        )
    return [by_photo[path] for path, _ in photos]


def test_metrics_aggregate_all_workers_after_a_concurrent_burst(server):
    photos = labelled_photos(BURST // 2, photo_dir())
    assert len(photos) == BURST
    before = _settled_scrape(server.url)
    predictions_before = _total(before, "catsdogs_predictions_total")
    batches_before, singles_before = _batches(before)

    responses = _burst(server.url, photos)
    succeeded = [r for r in responses if r.status_code == 200]
    assert len(succeeded) == BURST, [r.text for r in responses if r.status_code != 200]
    correct = sum(
        r.json()["label"] == label for r, (_, label) in zip(responses, photos, strict=True)
    )
    assert correct >= 0.8 * BURST

    served_labels = {"cat": 0, "dog": 0}
    for response in succeeded:
        served_labels[response.json()["label"]] += 1
    by_label_before = {
        label: _total(before, "catsdogs_predictions_total", label=label) for label in served_labels
    }
    _scrape_until(
        server.url,
        lambda samples: (
            _total(samples, "catsdogs_predictions_total") - predictions_before >= len(succeeded)
        ),
        "the burst's predictions",
    )
    # From then on, every scrape (answered by either worker) counts each prediction once.
    for _ in range(SCRAPES):
        after = _scrape(server.url)
        assert _total(after, "catsdogs_predictions_total") - predictions_before == len(succeeded)
        for label, count in served_labels.items():
            increase = _total(after, "catsdogs_predictions_total", label=label)
            assert increase - by_label_before[label] == count, label
        batches, singles = _batches(after)
        assert batches > batches_before
        # At least one of the burst's batches held more than one photo.
        assert batches - singles > batches_before - singles_before, (batches, singles)


def test_model_info_rejections_and_histograms(server):
    photo, _ = labelled_photos(1, photo_dir())[0]
    before = _settled_scrape(server.url)
    assert _predict(server.url, photo.read_bytes()).status_code == 200
    predictions_before = _total(before, "catsdogs_predictions_total")
    samples = _scrape_until(
        server.url,
        lambda samples: _total(samples, "catsdogs_predictions_total") > predictions_before,
        "the prediction",
    )
    assert _total(samples, "catsdogs_predictions_total") == predictions_before + 1

    # The photo's model call: one batch of one image, timed in both batch histograms.
    def increase(name: str) -> float:
        return _total(samples, name) - _total(before, name)

    assert increase("catsdogs_batch_size_count") == 1
    assert increase("catsdogs_batch_size_sum") == 1
    assert increase("catsdogs_batch_inference_seconds_count") == 1
    assert 0 < increase("catsdogs_batch_inference_seconds_sum") < TIMEOUT
    assert increase("catsdogs_batch_queue_wait_seconds_count") == 1
    assert 0 <= increase("catsdogs_batch_queue_wait_seconds_sum") < TIMEOUT

    info = [s for s in samples if s.name == "catsdogs_model_info"]
    assert [s.value for s in info if s.labels["tag"] == server.model_tag] == [1.0], (
        f"{info}: no model info. Was another `bentoml serve` started with this BENTOML_HOME? "
        "It empties $BENTOML_HOME/prometheus_multiproc_dir, cutting this server off /metrics."
    )
    raw = httpx.get(f"{server.url}/metrics", timeout=TIMEOUT).text
    assert re.search(
        r'^catsdogs_model_info\{[^}]*tag="' + re.escape(server.model_tag) + r'"[^}]*\} 1\.0$',
        raw,
        re.MULTILINE,
    ), raw

    empty_before = _total(samples, "catsdogs_rejected_inputs_total", reason="empty")
    response = _predict(server.url, b"", "empty.jpg")
    assert response.status_code == 400 and response.json()["reason"] == "empty"
    samples = _scrape(server.url)
    assert _total(samples, "catsdogs_rejected_inputs_total", reason="empty") == empty_before + 1

    # Every accepted photo is observed once in each histogram.
    predictions = _total(samples, "catsdogs_predictions_total")
    assert predictions >= 1
    for histogram in (
        "catsdogs_prediction_confidence",
        "catsdogs_image_bytes",
        "catsdogs_image_pixels",
    ):
        assert _total(samples, f"{histogram}_count") == predictions, histogram
        assert _total(samples, f"{histogram}_sum") > 0, histogram
    confidence_sum = _total(samples, "catsdogs_prediction_confidence_sum")
    assert 0.5 * predictions <= confidence_sum <= predictions


def test_request_id_is_echoed_and_logged(server):
    photo, _ = labelled_photos(1, photo_dir())[0]
    response = _predict(server.url, photo.read_bytes(), headers={"x-request-id": "test-123"})
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "test-123"
    refused = _predict(server.url, b"", headers={"x-request-id": "test-124"})
    assert refused.status_code == 400
    assert refused.headers["x-request-id"] == "test-124"
    generated = _predict(server.url, photo.read_bytes()).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated), generated

    def logged() -> dict | None:
        lines = {line["request_id"]: line for line in server.request_logs()}
        return lines if {"test-123", "test-124", generated} <= set(lines) else None

    logs = wait_until(logged, 30, "the request log lines")
    line = logs["test-123"]
    assert line["event"] == "request"
    assert line["method"] == "POST"
    assert line["path"] == "/predict"
    assert line["status"] == 200
    assert isinstance(line["latency_ms"], int | float) and line["latency_ms"] > 0
    assert logs["test-124"]["status"] == 400
    assert logs[generated]["status"] == 200


def _prediction_records(server) -> tuple[list[Path], list[dict]]:
    folder = server.monitoring_dir / "catsdogs_predictions"
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    records = [
        json.loads(line)
        for path in files
        if path.parent.name == "data"
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    return files, records


def test_prediction_logs(server):
    photo, _ = labelled_photos(1, photo_dir())[0]
    response = _predict(server.url, photo.read_bytes(), headers={"x-request-id": "monitor-1"})
    assert response.status_code == 200, response.text

    # Written after the response: wait until ours is there and every prediction the service
    # counted is logged.
    def all_logged() -> bool:
        try:
            _, records = _prediction_records(server)
        except ValueError:  # a line caught half-written
            return False
        predictions = _total(_scrape(server.url), "catsdogs_predictions_total")
        ours = any(record.get("x_request_id") == "monitor-1" for record in records)
        return ours and len(records) == predictions

    wait_until(all_logged, RECORDED_WITHIN, "every prediction in the records", interval=0.1)

    files, records = _prediction_records(server)
    assert files, f"no prediction logs under {server.monitoring_dir}"
    assert records
    for record in records:
        assert {"label", "confidence", "width", "height", "brightness", "latency_ms"} <= set(
            record
        ), record
        assert record["model"] == server.model_tag
        assert record["label"] in ("cat", "dog", "other")
        assert 0.0 <= record["saturation"] <= 1.0 and record["novelty_score"] >= 0
        assert isinstance(record["needs_review"], bool)
        assert len([name for name in record if name.startswith("embedding_")]) == 16
        assert 0.5 <= record["confidence"] <= 1.0
        assert record["width"] >= 32 and record["height"] >= 32
        assert 0.0 <= record["brightness"] <= 1.0
        assert record["latency_ms"] > 0
    ours = [record for record in records if record.get("x_request_id") == "monitor-1"]
    assert len(ours) == 1, ours
    assert ours[0]["label"] == response.json()["label"]
    assert ours[0]["confidence"] == pytest.approx(response.json()["confidence"])
    assert ours[0]["bytes"] == len(photo.read_bytes())

    # Every prediction the service made is logged, whichever worker made it.
    samples = _scrape(server.url)
    assert len(records) == _total(samples, "catsdogs_predictions_total")

    blob = re.compile(rb"[A-Za-z0-9+/=_-]{200,}")  # base64 of image data would look like this
    for path in files:
        content = path.read_bytes()
        for line in content.splitlines():
            assert len(line) < 2048, (path, line[:200])
        assert not blob.search(content), path
        assert b"\xff\xd8\xff" not in content, path  # nor raw JPEG bytes
