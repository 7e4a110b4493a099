"""Three outcomes over HTTP: cat, dog and non-pet photos in one /predict_batch call to a real
`bentoml serve` of the default full-data model get the answers the same model gives in-process
(cats and dogs right, the non-pet photos other as often as the model test demands), with
needs_review true exactly where the contract says; the metrics count them."""

from pathlib import Path

import bentoml
import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from catsdogs.model_loader import load_bento_classifier, load_open_world
from catsdogs.preprocessing import read_image
from helpers import MIN_NONPET_CAUGHT, NONPET_DIR, default_precision, photos

pytestmark = pytest.mark.slow


def _nonpet_photos() -> list[Path]:
    """The first photo of each category (other animals, people, objects, food, scenes,
    drawings, screenshots), then more other animals: the hardest case."""
    by_category: dict[str, list[Path]] = {}
    for path in sorted(NONPET_DIR.glob("*.jpg")):
        by_category.setdefault(path.name.split("-")[0], []).append(path)
    chosen = [paths[0] for paths in by_category.values()]
    return chosen + by_category["animal"][1:4]


def test_cats_dogs_and_other_photos_in_one_batch(full_server):
    cats, dogs = photos("cat")[:3], photos("dog")[:3]
    others = _nonpet_photos()
    files = [("file", (p.name, p.read_bytes())) for p in (*cats, *dogs, *others)]
    response = httpx.post(f"{full_server.url}/predict_batch", files=files, timeout=300)
    assert response.status_code == 200, response.text
    answers = response.json()
    got = [answer["label"] for answer in answers]
    names = [p.name for p in (*cats, *dogs, *others)]
    # Over HTTP, exactly the answers of the same model and precision run in this process.
    precision = default_precision(full_server.model_tag)
    classifier = load_bento_classifier(full_server.model_tag, precision=precision)
    pixels = [read_image(path, classifier.image_size).pixels for path in (*cats, *dogs, *others)]
    offline = classifier.answer_pixels(np.stack(pixels))
    assert got == [answer.label for answer in offline], list(zip(names, got, strict=True))
    # Cats and dogs right; the non-pet photos called other as often as the model test demands.
    assert got[: len(cats) + len(dogs)] == ["cat"] * len(cats) + ["dog"] * len(dogs)
    caught = got[len(cats) + len(dogs) :].count("other") / len(others)
    assert caught >= MIN_NONPET_CAUGHT, list(zip(names, got, strict=True))
    # The thresholds of the precision the server runs at (each copy has its own).
    open_world = load_open_world(Path(bentoml.models.get(full_server.model_tag).path), precision)
    review = open_world.review_threshold
    for answer in answers:
        if answer["label"] == "other":
            assert answer["needs_review"] is True
            assert answer["novelty_score"] > answer["novelty_threshold"]
        else:
            assert answer["needs_review"] is (answer["confidence"] < review)
            assert answer["novelty_score"] <= answer["novelty_threshold"]
        assert answer["confidence"] == max(answer["probabilities"].values())
        assert answer["novelty_threshold"] == pytest.approx(open_world.novelty.threshold)


def test_metrics_count_other_and_review(full_server):
    photo = _nonpet_photos()[0]
    httpx.post(f"{full_server.url}/predict", files={"file": (photo.name, photo.read_bytes())},
               timeout=120)  # fmt: skip
    text = httpx.get(f"{full_server.url}/metrics", timeout=30).text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("catsdogs_predictions_total", (("label", "other"),))] >= 1
    assert samples[("catsdogs_needs_review_total", (("label", "other"),))] >= 1
    assert samples[("catsdogs_novelty_score_count", ())] >= 1
