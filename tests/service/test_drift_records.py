"""Drift detection end to end: photos go through a real `bentoml serve` of the default
full-data model, its prediction records are read by the drift job and compared with the
reference saved with that model at training time (its validation photos).

Held-out cat and dog photos (the test split) show no drift; the same photos made grayscale
and darker, and photos with no cat or dog, do, and the job names the fields that moved. The
false-alarm rate is measured over disjoint windows of the undrifted records."""

import io

import httpx
import numpy as np
import pytest
from PIL import Image, ImageOps

from helpers import FULL_DATA_DIR, NONPET_DIR, wait_until
from training.data import load_dataset
from training.drift import Window, compare, load_reference, read_records, reference_path, run_drift

pytestmark = pytest.mark.slow
WINDOWS = 3  # disjoint windows of the undrifted records, for the false-alarm rate


def _darkened_grayscale(data: bytes) -> bytes:
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("L")
    out = io.BytesIO()
    image.point(lambda value: int(value * 0.6)).save(out, "JPEG", quality=90)
    return out.getvalue()


def _send(server, photos: list[tuple[str, bytes]], request_id: str) -> None:
    """Upload the photos, then wait until the service has written their records (it writes
    them after answering)."""
    url = server.url
    for start in range(0, len(photos), 16):
        chunk = photos[start : start + 16]
        response = httpx.post(
            f"{url}/predict_batch",
            files=[("file", (name, data)) for name, data in chunk],
            headers={"X-Request-Id": f"{request_id}-{start}"},
            timeout=300,
        )
        assert response.status_code == 200, response.text

    def written() -> bool:
        frame = read_records(server.monitoring_dir).frame
        return frame["x_request_id"].str.startswith(request_id).sum() == len(photos)

    wait_until(written, 60, f"the records of {request_id}")


@pytest.fixture(scope="module")
def held_out(full_model) -> list[tuple[str, bytes]]:
    """The full data's test split: photos the model and its reference never saw."""
    dataset = load_dataset(FULL_DATA_DIR, 32)  # the split is by content: any size will do
    return [(s.path, (FULL_DATA_DIR / s.path).read_bytes()) for s in dataset.select("test")[2]]


def test_held_out_photos_do_not_drift_and_changed_ones_do(full_server, full_model, held_out):
    tag = full_model.registered.bento_tag
    records = full_server.monitoring_dir
    _send(full_server, held_out, "held-out")
    undrifted = run_drift(records, Window(last=len(held_out)), embedding_view=False)
    [result] = undrifted.models
    print(f"undrifted: share {result.drift_share:.2f}, drifted "
          f"{[f.field for f in result.fields if f.detected]}")  # fmt: skip
    assert result.model == tag and result.records == len(held_out)
    assert not result.detected, [f for f in result.fields if f.detected]

    _send(full_server, [(n, _darkened_grayscale(d)) for n, d in held_out], "darkened")
    drifted = run_drift(records, Window(last=len(held_out)), embedding_view=False)
    [result] = drifted.models
    moved = {f.field for f in result.fields if f.detected}
    print(f"grayscale, darker: share {result.drift_share:.2f}, drifted {sorted(moved)}, "
          f"embedding {result.embedding}")  # fmt: skip
    assert result.detected and {"brightness", "saturation"} <= moved

    nonpet = [(p.name, p.read_bytes()) for p in sorted(NONPET_DIR.glob("*.jpg"))]
    _send(full_server, nonpet, "nonpet")
    drifted = run_drift(records, Window(last=len(nonpet)), embedding_view=False)
    [result] = drifted.models
    moved = {f.field for f in result.fields if f.detected}
    print(f"non-pet photos: share {result.drift_share:.2f}, drifted {sorted(moved)}")
    assert result.detected and {"label", "novelty_score"} <= moved


def test_false_alarms_on_windows_of_undrifted_records(full_server, full_model, held_out):
    frame = read_records(full_server.monitoring_dir).frame
    undrifted = frame[frame["x_request_id"].str.startswith("held-out")]
    if len(undrifted) < len(held_out):  # this module's first test sends them
        pytest.skip("needs the held-out records of the test before")
    reference = load_reference(reference_path(full_model.registered.bento_tag))
    order = np.random.default_rng(0).permutation(len(undrifted))
    alarms = []
    for window in np.array_split(order, WINDOWS):
        result = compare(undrifted.iloc[window], reference, embedding_view=False)
        alarms.append(result.detected)
    print(f"false alarms: {sum(alarms)} of {WINDOWS} windows of ~{len(order) // WINDOWS} records")
    assert sum(alarms) <= 1
