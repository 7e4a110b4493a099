"""Prediction records and a drift reference made from real photos, for the drift job's tests.

The fields the service logs (or will log: the record contract in training/drift.py) are
computed here from each photo the way the service sees it: width and height of the decoded
photo, brightness (mean pixel) and saturation (mean HSV saturation) of the prepared image
(at the default model size), and the upload's size in bytes. Two stand-ins, until the service
and training provide the real ones:

- `label` is the photo's true label (the model is ~99% right on these photos);
- `embedding_00`..`embedding_15` are a STAND-IN for the model's 16-dim embedding projection:
  a fixed random projection of the image downscaled to 8x8 pixels.

confidence, needs_review and novelty_score need the model and are left out: the job must
compare what both sides have and name the rest.
"""

import hashlib
import io
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from catsdogs.config import DEFAULT_IMAGE_SIZE
from catsdogs.preprocessing import prepare_image
from training.data import assign_split, find_labelled_files
from training.drift import EMBEDDING_DIM

# Stand-in embedding: 8x8 RGB pixels (192 values in 0..1) times a fixed Gaussian matrix.
_SMALL = 8
PROJECTION = np.random.default_rng(14).normal(
    0.0, 1.0 / np.sqrt(_SMALL * _SMALL * 3), (_SMALL * _SMALL * 3, EMBEDDING_DIM)
)


@dataclass(frozen=True)
class Photo:
    path: Path
    label: str
    split: str  # the content-hash split training uses: the reference is "validation"


def split_photos(root: Path) -> list[Photo]:
    labelled, _ = find_labelled_files(root)
    return [
        Photo(path, label, assign_split(hashlib.sha256(path.read_bytes()).hexdigest()))
        for path, label in labelled
    ]


def features(data: bytes, label: str) -> dict:
    """One record's fields for an uploaded file's bytes, computed as the service does."""
    image = prepare_image(data, DEFAULT_IMAGE_SIZE)
    pixels = image.pixels
    picture = Image.fromarray(pixels)
    saturation = np.asarray(picture.convert("HSV"))[..., 1]
    small = np.asarray(picture.resize((_SMALL, _SMALL), Image.BILINEAR), dtype=np.float32)
    embedding = (small.reshape(-1) / 255.0) @ PROJECTION
    return {
        "width": image.width,
        "height": image.height,
        "brightness": float(pixels.mean(dtype=np.float32)) / 255.0,
        "saturation": float(saturation.mean(dtype=np.float32)) / 255.0,
        "bytes": len(data),
        "label": label,
        **{f"embedding_{i:02d}": float(value) for i, value in enumerate(embedding)},
    }


def darkened_grayscale(data: bytes, factor: float = 0.6) -> bytes:
    """The same photo as a camera with a broken colour pipeline would send it: grayscale,
    darker (pixels times factor), re-encoded as JPEG."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("L")
    out = io.BytesIO()
    image.point(lambda value: int(value * factor)).save(out, "JPEG", quality=90)
    return out.getvalue()


def frame(photos: list[Photo], transform=None) -> pd.DataFrame:
    rows = []
    for photo in photos:
        data = photo.path.read_bytes()
        rows.append(features(transform(data) if transform else data, photo.label))
    return pd.DataFrame(rows)


def as_records(
    fields: pd.DataFrame,
    model: str,
    start: datetime = datetime(2026, 12, 1, 6, 0, 0),
    step: timedelta = timedelta(seconds=7),
) -> list[dict]:
    """Records as bentoml.monitor writes them: the service's fields in its order, then
    BentoML's timestamp (local ISO time, no offset), request_id and trace_id."""
    records = []
    for index, row in enumerate(fields.to_dict("records")):
        records.append(
            {
                "x_request_id": f"req-{index:05d}",
                **{name: _plain(value) for name, value in row.items()},
                "latency_ms": 12.5 + index % 7,
                "model": model,
                "timestamp": (start + index * step).isoformat(),
                "request_id": "None",
                "trace_id": "0",
            }
        )
    return records


def write_monitoring_dir(folder: Path, records: list[dict], workers: int = 2) -> list[Path]:
    """The records spread over `workers` data files (round robin, like requests over worker
    processes) in bentoml.monitor's layout, plus the schema files."""
    data_dir = folder / "catsdogs_predictions" / "data"
    schema_dir = folder / "catsdogs_predictions" / "schema"
    data_dir.mkdir(parents=True, exist_ok=True)
    schema_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for worker in range(1, workers + 1):
        path = data_dir / f"data.{worker}.log"
        with path.open("a") as out:
            for record in records[worker - 1 :: workers]:
                out.write(json.dumps(record) + "\n")
        columns = [{"name": name, "role": "feature", "type": "numerical"} for name in records[0]]
        meta = {"bento_name": "CatsDogs", "bento_version": "not available"}
        (schema_dir / f"schema.{worker}.log").write_text(
            json.dumps({"meta_data": meta, "columns": columns}) + "\n"
        )
        paths.append(path)
    return paths


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value
