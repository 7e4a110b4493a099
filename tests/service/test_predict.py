"""The HTTP service on real photos: the same answers as the offline classifier; health."""

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bentoml
import httpx
import numpy as np
import pytest

from catsdogs.model_loader import load_bento_classifier
from helpers import default_precision, labelled_photos, photo_dir, photos

PHOTOS_PER_CLASS = 150


def test_predictions_over_http_match_offline_evaluation(server):
    photos = labelled_photos(PHOTOS_PER_CLASS, photo_dir(), last=True)

    def post(path: Path) -> dict:
        response = httpx.post(
            f"{server.url}/predict", files={"file": (path.name, path.read_bytes())}, timeout=120
        )
        assert response.status_code == 200, response.text
        return response.json()

    with ThreadPoolExecutor(8) as pool:
        served = list(pool.map(post, [path for path, _ in photos]))
    offline = load_bento_classifier(server.model_tag).answer_images(
        [p.read_bytes() for p, _ in photos]
    )

    labels = [label for _, label in photos]
    served_accuracy = np.mean([s["label"] == t for s, t in zip(served, labels, strict=True)])
    offline_accuracy = np.mean([o.label == t for o, t in zip(offline, labels, strict=True)])
    assert served_accuracy == offline_accuracy
    assert served_accuracy > 0.9
    assert [s["label"] for s in served] == [o.label for o in offline]
    np.testing.assert_allclose(
        [s["probabilities"]["dog"] for s in served],
        [o.probabilities["dog"] for o in offline],
        atol=1e-5,  # batches of different sizes may round differently in the last digits
    )
    first = served[0]
    assert set(first) == {"label", "confidence", "probabilities", "needs_review",
                          "novelty_score", "novelty_threshold", "model"}  # fmt: skip
    assert [s["needs_review"] for s in served] == [o.needs_review for o in offline]
    np.testing.assert_allclose([s["novelty_score"] for s in served],
                               [o.novelty_score for o in offline], atol=1e-4)  # fmt: skip
    assert first["model"] == server.model_tag
    assert first["confidence"] == max(first["probabilities"].values())


def test_batch_endpoint_answers_each_file_in_order(server):
    cat, dog = photos("cat")[0], photos("dog")[0]
    files = [("file", (p.name, p.read_bytes())) for p in (cat, dog, cat)]
    response = httpx.post(f"{server.url}/predict_batch", files=files, timeout=60)
    assert response.status_code == 200, response.text
    assert [r["label"] for r in response.json()] == ["cat", "dog", "cat"]


def test_health_endpoints(server):
    health = httpx.get(f"{server.url}/health", timeout=10)
    assert health.status_code == 200
    assert health.json() == {
        "status": "ok",
        "model": server.model_tag,
        "precision": default_precision(server.model_tag),
    }
    for path in ("/livez", "/readyz", "/healthz"):
        assert httpx.get(f"{server.url}{path}", timeout=10).status_code == 200, path
    home = httpx.get(f"{server.url}/", timeout=10, follow_redirects=True)
    assert home.url.path == "/app" and 'type="file"' in home.text  # the upload page
    docs = httpx.get(f"{server.url}/docs", timeout=10)
    assert "swagger-ui" in docs.text and "googletagmanager" not in docs.text


def test_bentoml_python_client(server, tmp_path):
    cat, dog = photos("cat")[0], photos("dog")[0]
    with bentoml.SyncHTTPClient(server.url) as client:
        answer = client.predict(file=cat)
        assert answer["label"] == "cat" and answer["model"] == server.model_tag
        batch = client.predict_batch(file=[cat, dog, cat])
        assert [item["label"] for item in batch] == ["cat", "dog", "cat"]
        bad = tmp_path / "notes.jpg"
        bad.write_text("not a photo")
        with pytest.raises(bentoml.exceptions.InvalidArgument) as refused:
            client.predict(file=bad)
    assert json.loads(str(refused.value))["reason"] == "not_an_image"


def test_the_photo_itself_as_the_request_body(server):
    dog = photos("dog")[0].read_bytes()
    for content_type in ("image/jpeg", "application/octet-stream", "image/png"):
        response = httpx.post(f"{server.url}/predict", content=dog,
                              headers={"Content-Type": content_type}, timeout=60)  # fmt: skip
        assert response.status_code == 200, response.text
        assert response.json()["label"] == "dog"
    batch = httpx.post(f"{server.url}/predict_batch", content=dog,
                       headers={"Content-Type": "image/jpeg"}, timeout=60)  # fmt: skip
    assert [answer["label"] for answer in batch.json()] == ["dog"]
