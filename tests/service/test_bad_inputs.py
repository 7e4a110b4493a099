"""The HTTP service on bad, hostile and unusual uploads, against a real `bentoml serve`.

Bad uploads get a 4xx JSON answer that says what was wrong (never a 500) and leave the server
answering; more images than the model's queue holds get a 503 "overloaded" with Retry-After;
unusual but valid images (other modes, formats, names and content types) are accepted and
classified like the original photo.
"""

import io
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from catsdogs.settings import PART_OVERHEAD_BYTES
from helpers import photo_dir, photos, run_bentoml_serve

TIMEOUT = 120
CANDIDATES_PER_CLASS = 16  # the default CATSDOGS_MAX_FILES: one /predict_batch per class
LIMIT_MAX_BYTES = 200_000
LIMIT_MAX_FILES = 3
SMALL_QUEUE = 2  # CATSDOGS_MAX_QUEUE of the overload tests' server


@dataclass(frozen=True)
class Photo:
    path: Path
    label: str
    confidence: float

    def image(self) -> Image.Image:
        with Image.open(self.path) as image:
            return image.convert("RGB")


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _post(url: str, path: str = "/predict", **kwargs) -> httpx.Response:
    return httpx.post(f"{url}{path}", timeout=TIMEOUT, **kwargs)


def _predict(url: str, data: bytes, name: str = "photo.jpg", content_type: str | None = None):
    file = (name, data) if content_type is None else (name, data, content_type)
    return _post(url, files={"file": file})


@pytest.fixture(scope="module")
def classified(server) -> dict[str, list[Photo]]:
    """Real photos of each class as the server classifies them, most confident first; only
    those given their true label."""
    result = {}
    for label in ("cat", "dog"):
        paths = photos(label, photo_dir())[:CANDIDATES_PER_CLASS]
        files = [("file", (path.name, path.read_bytes())) for path in paths]
        response = _post(server.url, "/predict_batch", files=files)
        assert response.status_code == 200, response.text
        correct = [
            Photo(path, label, answer["confidence"])
            for path, answer in zip(paths, response.json(), strict=True)
            if answer["label"] == label
        ]
        assert len(correct) >= CANDIDATES_PER_CLASS // 2, f"model misses most {label} photos"
        result[label] = sorted(correct, key=lambda photo: -photo.confidence)
    return result


@pytest.fixture(scope="module")
def best(classified) -> dict[str, Photo]:
    """The photo of each class the model is most confident about in its original form."""
    return {label: photos[0] for label, photos in classified.items()}


def _assert_refused(response: httpx.Response, status: int, reason: str, *words: str) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert body["reason"] == reason, body
    assert isinstance(body["error"], str) and body["error"], body
    for word in words:
        assert word.lower() in body["error"].lower(), (word, body)
    return body


def _assert_still_serves(url: str, photo: Photo) -> None:
    response = _predict(url, photo.path.read_bytes(), photo.path.name)
    assert response.status_code == 200, response.text
    assert response.json()["label"] == photo.label


# --- bad uploads on the shared server -------------------------------------------------------


def test_empty_file(server, best):
    response = _predict(server.url, b"", "empty.jpg", "image/jpeg")
    _assert_refused(response, 400, "empty", "empty")
    _assert_still_serves(server.url, best["cat"])


def test_text_file_named_jpg(server, best):
    text = b"This is not a photo of a cat.\n" * 50
    response = _predict(server.url, text, "cat.jpg", "image/jpeg")
    _assert_refused(response, 400, "not_an_image", "not an image")
    _assert_still_serves(server.url, best["dog"])


def test_truncated_jpeg(server, best):
    data = best["cat"].path.read_bytes()
    response = _predict(server.url, data[: len(data) // 2], "cat.jpg", "image/jpeg")
    _assert_refused(response, 400, "corrupt", "truncated")
    _assert_still_serves(server.url, best["cat"])


def test_one_pixel_image(server, best):
    response = _predict(server.url, _encode(Image.new("RGB", (1, 1), "white"), "PNG"), "px.png")
    _assert_refused(response, 400, "too_small", "1x1")
    _assert_still_serves(server.url, best["dog"])


def test_decompression_bomb_is_refused_from_its_header(server, best):
    bomb = _encode(Image.new("1", (10_000, 10_000)), "PNG", optimize=True)
    assert len(bomb) < 50_000  # tiny on disk, 100 megapixels once decoded
    response = _predict(server.url, bomb, "bomb.png", "image/png")
    _assert_refused(response, 413, "too_many_pixels", "10000x10000")
    _assert_still_serves(server.url, best["cat"])


def test_request_without_a_body(server, best):
    response = _post(server.url)
    _assert_refused(response, 400, "not_multipart", "no file uploaded", "'file'")
    _assert_still_serves(server.url, best["dog"])


def test_json_body_instead_of_a_form(server, best):
    response = _post(server.url, json={"file": "cat.jpg"})
    _assert_refused(response, 400, "not_multipart", "no file uploaded", "'file'")
    response = _post(server.url, "/predict_batch", json={"file": ["cat.jpg"]})
    _assert_refused(response, 400, "not_multipart", "no file uploaded", "'file'")
    _assert_still_serves(server.url, best["cat"])


def test_wrongly_named_form_field(server, best):
    photo = best["cat"].path
    response = _post(server.url, files={"image": (photo.name, photo.read_bytes())})
    body = _assert_refused(response, 400, "wrong_field", "form fields found: image", "'file'")
    assert "-F file=@" in body["error"]
    files = [("file", (photo.name, photo.read_bytes())), ("image", (photo.name, b"x"))]
    response = _post(server.url, "/predict_batch", files=files)
    _assert_refused(response, 400, "wrong_field", "image", "'file'")
    _assert_still_serves(server.url, best["dog"])


# --- size and count limits on a second server with small limits -----------------------------


@pytest.fixture(scope="module")
def limited_server(trained_model, tmp_path_factory) -> Iterator:
    """A second server with small limits (its own BENTOML_HOME: see run_bentoml_serve)."""
    with run_bentoml_serve(
        "service:CatsDogs",
        tmp_path_factory.mktemp("limited-server"),
        trained_model.registered.bento_tag,
        CATSDOGS_MAX_BYTES=str(LIMIT_MAX_BYTES),
        CATSDOGS_MAX_FILES=str(LIMIT_MAX_FILES),
    ) as running:
        yield running


def test_file_over_the_byte_limit_is_refused_before_decoding(limited_server, best):
    photo = best["dog"].path.read_bytes()
    assert len(photo) < LIMIT_MAX_BYTES
    # A valid JPEG (Pillow ignores data after its end marker) that is too big.
    padded = photo + b"\0" * (LIMIT_MAX_BYTES + 1 - len(photo))
    response = _predict(limited_server.url, padded, "big.jpg", "image/jpeg")
    _assert_refused(response, 413, "too_large", "file 1", f"over the limit of {LIMIT_MAX_BYTES}")
    # The same as the request body itself.
    response = _post(limited_server.url, content=padded, headers={"Content-Type": "image/jpeg"})
    _assert_refused(response, 413, "too_large", f"over the limit of {LIMIT_MAX_BYTES}")
    # Not an image at all, but over the limit: refused for its size, so never decoded.
    junk = b"junk" * (LIMIT_MAX_BYTES // 4 + 1)
    response = _predict(limited_server.url, junk, "junk.jpg", "image/jpeg")
    _assert_refused(response, 413, "too_large", "over the limit")
    # The same photo within the limit is fine.
    _assert_still_serves(limited_server.url, best["dog"])


def test_request_body_over_the_cap_is_refused(limited_server, best):
    # Each route's cap is what it can use: one file at the limit for /predict, max_files for
    # /predict_batch (plus room for the multipart headers); a body over it is refused from
    # its Content-Length, before it is read.
    single_cap = LIMIT_MAX_BYTES + PART_OVERHEAD_BYTES
    batch_cap = LIMIT_MAX_FILES * single_cap
    big = b"\xff" * (single_cap + 100_000)
    response = _predict(limited_server.url, big, "huge.jpg", "image/jpeg")
    _assert_refused(response, 413, "too_large", "request body", str(single_cap))
    response = _post(limited_server.url, "/predict_batch", files=[("file", ("a.jpg", big))] * 3)
    _assert_refused(response, 413, "too_large", "request body", str(batch_cap))
    # Every file within its own limit, but together over the cap (and over max_files).
    files = [("file", (f"{i}.jpg", b"\xff" * (LIMIT_MAX_BYTES - 10))) for i in range(5)]
    response = _post(limited_server.url, "/predict_batch", files=files)
    _assert_refused(response, 413, "too_large", "request body")
    _assert_still_serves(limited_server.url, best["cat"])


def test_too_many_files_in_a_batch(limited_server, best):
    photo = best["cat"]
    files = [("file", (photo.path.name, photo.path.read_bytes()))] * (LIMIT_MAX_FILES + 1)
    response = _post(limited_server.url, "/predict_batch", files=files)
    _assert_refused(response, 413, "too_many_files", f"limit is {LIMIT_MAX_FILES}")
    response = _post(limited_server.url, "/predict_batch", files=files[:LIMIT_MAX_FILES])
    assert response.status_code == 200, response.text
    assert [answer["label"] for answer in response.json()] == [photo.label] * LIMIT_MAX_FILES


# --- more images than the model's queue holds: 503 overloaded -------------------------------


@pytest.fixture(scope="module")
def small_queue_server(trained_model, tmp_path_factory) -> Iterator:
    """A server whose model queue holds SMALL_QUEUE images (one worker, so one queue)."""
    with run_bentoml_serve(
        "service:CatsDogs",
        tmp_path_factory.mktemp("small-queue-server"),
        trained_model.registered.bento_tag,
        CATSDOGS_MAX_QUEUE=str(SMALL_QUEUE),
        CATSDOGS_WORKERS="1",
    ) as running:
        yield running


def _rejected(url: str, reason: str) -> float:
    """catsdogs_rejected_inputs_total{reason} (counted before the answer is sent)."""
    text = httpx.get(f"{url}/metrics", timeout=TIMEOUT).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "catsdogs_rejected_inputs_total" and sample.labels["reason"] == reason
    )


def test_more_images_than_the_queue_holds_get_503_overloaded(small_queue_server, best):
    url, photo = small_queue_server.url, best["cat"]
    before = _rejected(url, "overloaded")
    # One request's images join the queue together, before the model takes any of them.
    files = [("file", (photo.path.name, photo.path.read_bytes()))] * (SMALL_QUEUE + 1)
    response = _post(url, "/predict_batch", files=files)
    _assert_refused(response, 503, "overloaded", "retry")
    assert response.headers["retry-after"] == "1"
    assert _rejected(url, "overloaded") == before + 1
    # As many images as the queue holds are classified; so is a single photo.
    response = _post(url, "/predict_batch", files=files[:SMALL_QUEUE])
    assert response.status_code == 200, response.text
    assert [answer["label"] for answer in response.json()] == [photo.label] * SMALL_QUEUE
    _assert_still_serves(url, photo)
    assert _rejected(url, "overloaded") == before + 1


def test_concurrent_burst_on_a_small_queue_is_classified_or_refused(small_queue_server, classified):
    """Far more concurrent uploads than the queue holds: each one is either classified
    correctly or refused with 503 overloaded (never another error), and each refusal is
    counted once."""
    url = small_queue_server.url
    photos = [photo for photos in classified.values() for photo in photos]
    photos = [photos[i % len(photos)] for i in range(24)]
    before = _rejected(url, "overloaded")
    barrier = threading.Barrier(len(photos))

    def send(photo: Photo) -> httpx.Response:
        barrier.wait(timeout=TIMEOUT)
        return _predict(url, photo.path.read_bytes(), photo.path.name)

    with ThreadPoolExecutor(len(photos)) as pool:
        responses = list(pool.map(send, photos))

    refused = 0
    for photo, response in zip(photos, responses, strict=True):
        if response.status_code == 503:
            _assert_refused(response, 503, "overloaded", "retry")
            assert response.headers["retry-after"] == "1"
            refused += 1
        else:
            assert response.status_code == 200, response.text
            assert response.json()["label"] == photo.label
    assert refused < len(photos)  # the model kept classifying through the burst
    assert _rejected(url, "overloaded") == before + refused
    _assert_still_serves(url, photos[0])


# --- unusual but valid images: accepted and classified like the original --------------------


def _grayscale(image: Image.Image) -> tuple[bytes, str]:
    return _encode(image.convert("L"), "JPEG", quality=95), "L"


def _gray16_png(image: Image.Image) -> tuple[bytes, str]:
    wide = np.asarray(image.convert("L"), dtype=np.uint16) * 257
    return _encode(Image.fromarray(wide), "PNG"), "I;16"


def _palette_png(image: Image.Image) -> tuple[bytes, str]:
    return _encode(image.convert("P", palette=Image.Palette.ADAPTIVE, colors=256), "PNG"), "P"


def _rgba_png(image: Image.Image) -> tuple[bytes, str]:
    alpha = Image.new("L", image.size, 0)
    border_x, border_y = image.width // 20, image.height // 20
    alpha.paste(255, (border_x, border_y, image.width - border_x, image.height - border_y))
    rgba = image.copy()
    rgba.putalpha(alpha)
    return _encode(rgba, "PNG"), "RGBA"


def _cmyk_jpeg(image: Image.Image) -> tuple[bytes, str]:
    return _encode(image.convert("CMYK"), "JPEG", quality=95), "CMYK"


def _exif_rotated(image: Image.Image) -> tuple[bytes, str]:
    # Stored sideways; orientation 6 says "turn 90 degrees clockwise to show it upright".
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = image.transpose(Image.Transpose.ROTATE_90)
    return _encode(stored, "JPEG", quality=95, exif=exif), "RGB"


def _webp(image: Image.Image) -> tuple[bytes, str]:
    return _encode(image, "WEBP", quality=90), "RGB"


CONVERSIONS = {
    "grayscale": _grayscale,
    "gray16_png": _gray16_png,
    "palette_png": _palette_png,
    "rgba_png": _rgba_png,
    "cmyk_jpeg": _cmyk_jpeg,
    "exif_rotated": _exif_rotated,
    "webp": _webp,
}


@pytest.mark.parametrize("label", ["cat", "dog"])
@pytest.mark.parametrize("conversion", list(CONVERSIONS))
def test_converted_photo_is_classified_like_the_original(server, best, conversion, label):
    photo = best[label]
    original = _predict(server.url, photo.path.read_bytes(), photo.path.name)
    assert original.status_code == 200, original.text
    assert original.json()["label"] == photo.label

    data, mode = CONVERSIONS[conversion](photo.image())
    with Image.open(io.BytesIO(data)) as check:  # the file really is what the test says
        assert check.mode == mode
        if conversion == "exif_rotated":
            assert check.size == (photo.image().height, photo.image().width)
            assert check.getexif()[0x0112] == 6
    response = _predict(server.url, data, f"converted-{conversion}.img")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["label"] == photo.label, (conversion, answer, original.json())
    if conversion == "exif_rotated":
        assert answer["confidence"] > 0.8, answer
        assert answer["confidence"] == pytest.approx(original.json()["confidence"], abs=0.1)


@pytest.mark.parametrize("first", ["cat", "dog"])
def test_animated_gif_is_classified_by_its_first_frame(server, best, first):
    second = "dog" if first == "cat" else "cat"
    frames = [best[first].image(), best[second].image().resize(best[first].image().size)]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=500)
    with Image.open(io.BytesIO(data)) as check:
        assert check.n_frames == 2
    response = _predict(server.url, data, "animated.gif", "image/gif")
    assert response.status_code == 200, response.text
    assert response.json()["label"] == first, response.json()


def test_png_named_and_typed_as_jpeg(server, best):
    data = _encode(best["dog"].image(), "PNG")
    assert data.startswith(b"\x89PNG")
    response = _predict(server.url, data, "photo.jpg", "image/jpeg")
    assert response.status_code == 200, response.text
    assert response.json()["label"] == "dog"


def test_jpeg_as_octet_stream_without_extension(server, best):
    data = best["cat"].path.read_bytes()
    response = _predict(server.url, data, "upload.bin", "application/octet-stream")
    assert response.status_code == 200, response.text
    assert response.json()["label"] == "cat"


# --- good and bad uploads at once -----------------------------------------------------------


def _batch_histogram(url: str) -> tuple[float, float]:
    """(observations, batches of size 1) of the service's adaptive batch size histogram
    (written before each response, so no waiting for background tasks)."""
    text = httpx.get(f"{url}/metrics", timeout=TIMEOUT).text
    count = singles = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "catsdogs_batch_size":
            continue
        for sample in family.samples:
            if sample.name.endswith("_count"):
                count += sample.value
            elif sample.name.endswith("_bucket") and float(sample.labels["le"]) == 1.0:
                singles += sample.value
    return count, singles


def test_concurrent_good_and_bad_uploads(server, classified):
    good = [photo for photos in classified.values() for photo in photos]
    # Batches form only while the model is busy when uploads arrive. On 2 cores, 1 of ~50
    # measured bursts of 32 reached the model one upload at a time (another formed just one
    # batch of several); each of 15 bursts of 64 formed at least 5 batches of several.
    good = [good[i % len(good)] for i in range(64)]
    cat_bytes = classified["cat"][0].path.read_bytes()
    bad = [
        (b"", "empty"),
        (b"not an image at all\n" * 20, "not_an_image"),
        (cat_bytes[: len(cat_bytes) // 3], "corrupt"),
    ]
    bad = [bad[i % len(bad)] for i in range(16)]
    jobs = [("good", photo.path.read_bytes(), photo.label) for photo in good]
    jobs += [("bad", data, reason) for data, reason in bad]
    jobs = jobs[::5] + [job for i, job in enumerate(jobs) if i % 5]  # bad ones mixed in
    before_count, before_singles = _batch_histogram(server.url)
    barrier = threading.Barrier(len(jobs))

    def send(job):
        barrier.wait(timeout=TIMEOUT)
        return _predict(server.url, job[1], "upload.jpg", "image/jpeg")

    with ThreadPoolExecutor(len(jobs)) as pool:
        responses = list(pool.map(send, jobs))

    for (kind, _, expected), response in zip(jobs, responses, strict=True):
        if kind == "good":
            assert response.status_code == 200, response.text
            assert response.json()["label"] == expected
        else:
            assert response.status_code == 400, response.text
            assert response.json()["reason"] == expected
    after_count, after_singles = _batch_histogram(server.url)
    assert after_count > before_count  # the model was called through the adaptive batcher
    # ...and fewer times than there were good uploads: some were batched together.
    assert after_count - before_count < len(good)
    assert (after_count - after_singles) > (before_count - before_singles)
