"""Tests for training.data: bad files are rejected with a reason, duplicates are removed."""

from __future__ import annotations

import csv
import io
import shutil
import struct
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catsdogs.preprocessing import read_image
from helpers import photos as sample_photos
from training.data import Dataset, Duplicate, Rejected, Sample, load_dataset

SIZE = 64
GOOD_PER_CLASS = 4


def _photos(label: str) -> list[Path]:
    photos = sample_photos(label)
    assert len(photos) > GOOD_PER_CLASS
    return photos


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


EXPECTED_REJECTED = {
    "cat/Thumbs.db": "not_an_image",
    "cat/empty.jpg": "empty",
    "cat/truncated.jpg": "corrupt",
    "dog/notes.jpg": "not_an_image",
    "dog/tiny.jpg": "too_small",
    "notes/README.txt": "unlabelled",
}


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A data folder of good photos and bad files; returns (root, relative paths of good ones)."""
    root = tmp_path_factory.mktemp("messy") / "data"
    good: list[str] = []
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for source in _photos(label)[:GOOD_PER_CLASS]:
            shutil.copyfile(source, root / label / source.name)
            good.append(f"{label}/{source.name}")

    (root / "cat" / "empty.jpg").touch()
    (root / "dog" / "notes.jpg").write_text("These are not the photos you are looking for.\n" * 5)
    photo = _photos("cat")[GOOD_PER_CLASS].read_bytes()
    (root / "cat" / "truncated.jpg").write_bytes(photo[: len(photo) // 2])
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 60, 30)).save(buffer, "JPEG")
    (root / "dog" / "tiny.jpg").write_bytes(buffer.getvalue())
    # Windows thumbnail cache: an OLE compound file, not an image.
    (root / "cat" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(2040))
    (root / "notes").mkdir()
    (root / "notes" / "README.txt").write_text("photos from the sample\n")

    # Exact copies: one under the same label, one under the other label.
    shutil.copyfile(root / good[0], root / "cat" / "copy of first.jpg")
    shutil.copyfile(root / good[1], root / "dog" / "zz_cat_copy.jpg")
    return root, sorted(good)


@pytest.fixture(scope="module")
def dataset(messy: tuple[Path, list[str]]) -> Dataset:
    root, _ = messy
    return load_dataset(root, image_size=SIZE)


def test_each_bad_file_is_rejected_with_its_reason(dataset: Dataset) -> None:
    assert {r.path: r.reason for r in dataset.rejected} == EXPECTED_REJECTED
    assert len(dataset.rejected) == len(EXPECTED_REJECTED)
    assert all(isinstance(r, Rejected) and r.detail for r in dataset.rejected)
    assert [r.path for r in dataset.rejected] == sorted(r.path for r in dataset.rejected)


def test_duplicates_are_removed_and_reported(
    dataset: Dataset, messy: tuple[Path, list[str]]
) -> None:
    root, good = messy
    by_path = {d.path: d for d in dataset.duplicates}
    assert set(by_path) == {"cat/copy of first.jpg", "dog/zz_cat_copy.jpg"}

    same = by_path["cat/copy of first.jpg"]
    assert same.duplicate_of == good[0]
    assert same.same_label is True
    other = by_path["dog/zz_cat_copy.jpg"]
    assert other.duplicate_of == good[1]
    assert other.same_label is False

    for duplicate in dataset.duplicates:
        assert isinstance(duplicate, Duplicate)
        original = next(s for s in dataset.samples if s.path == duplicate.duplicate_of)
        assert duplicate.sha256 == original.sha256
        assert (root / duplicate.path).read_bytes() == (root / duplicate.duplicate_of).read_bytes()
    sample_paths = {s.path for s in dataset.samples}
    assert not sample_paths & set(by_path)


def test_valid_samples_are_exactly_the_unique_good_photos(
    dataset: Dataset, messy: tuple[Path, list[str]]
) -> None:
    root, good = messy
    assert [s.path for s in dataset.samples] == good
    for sample in dataset.samples:
        assert sample.label == sample.path.split("/")[0]
        with Image.open(root / sample.path) as image:
            assert (sample.width, sample.height) == image.size
    assert len({s.sha256 for s in dataset.samples}) == len(good)


def test_summary_counts_everything(dataset: Dataset, messy: tuple[Path, list[str]]) -> None:
    _, good = messy
    summary = dataset.summary()
    assert summary["valid"] == len(good) == 2 * GOOD_PER_CLASS
    assert summary["rejected"] == len(EXPECTED_REJECTED)
    assert summary["rejected_by_reason"] == {
        "not_an_image": 2,
        "empty": 1,
        "corrupt": 1,
        "too_small": 1,
        "unlabelled": 1,
    }
    assert summary["duplicates"] == 2
    assert summary["duplicates_with_other_label"] == 1
    splits = summary["splits"]
    assert set(splits) == {"train", "validation", "test"}
    assert sum(splits[s]["cat"] for s in splits) == GOOD_PER_CLASS
    assert sum(splits[s]["dog"] for s in splits) == GOOD_PER_CLASS
    assert summary["fingerprint"] == dataset.fingerprint


def test_pixels_rows_are_the_preprocessed_samples(
    dataset: Dataset, messy: tuple[Path, list[str]]
) -> None:
    root, _ = messy
    n = len(dataset.samples)
    assert dataset.pixels.shape == (n, SIZE, SIZE, 3)
    assert dataset.pixels.dtype == np.uint8
    for i, sample in enumerate(dataset.samples):
        np.testing.assert_array_equal(
            dataset.pixels[i], read_image(root / sample.path, SIZE).pixels
        )
    # Rows differ: no row was left unwritten or written twice.
    assert len({dataset.pixels[i].tobytes() for i in range(n)}) == n


def test_select_returns_matching_rows(dataset: Dataset) -> None:
    total = 0
    for split in ("train", "validation", "test"):
        pixels, labels, samples = dataset.select(split)
        assert all(s.split == split for s in samples)
        assert len(pixels) == len(labels) == len(samples)
        for row, label, sample in zip(pixels, labels, samples, strict=True):
            i = dataset.samples.index(sample)
            np.testing.assert_array_equal(row, dataset.pixels[i])
            assert dataset.class_names[label] == sample.label
        total += len(samples)
    assert total == len(dataset.samples)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def _as_strings(row: object) -> dict[str, str]:
    return {key: str(value) for key, value in asdict(row).items()}


def test_write_reports_rows_match(dataset: Dataset, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "nested"
    paths = dataset.write_reports(out)
    assert paths == {
        "manifest": out / "manifest.csv",
        "rejected": out / "rejected.csv",
        "duplicates": out / "duplicates.csv",
    }
    manifest = _read_csv(paths["manifest"])
    assert manifest == [_as_strings(s) for s in dataset.samples]
    assert list(manifest[0]) == list(Sample.__dataclass_fields__)
    rejected = _read_csv(paths["rejected"])
    assert {row["path"]: row["reason"] for row in rejected} == EXPECTED_REJECTED
    assert rejected == [_as_strings(r) for r in dataset.rejected]
    duplicates = _read_csv(paths["duplicates"])
    assert duplicates == [_as_strings(d) for d in dataset.duplicates]
    assert {row["path"]: row["same_label"] for row in duplicates} == {
        "cat/copy of first.jpg": "True",
        "dog/zz_cat_copy.jpg": "False",
    }


def test_write_reports_of_a_clean_dataset_has_header_only_files(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "dog").mkdir(parents=True)
    shutil.copyfile(_photos("dog")[0], root / "dog" / "a.jpg")
    dataset = load_dataset(root, image_size=SIZE)
    paths = dataset.write_reports(tmp_path / "out")
    assert len(_read_csv(paths["manifest"])) == 1
    assert paths["rejected"].read_text().strip() == ",".join(Rejected.__dataclass_fields__)
    assert paths["duplicates"].read_text().strip() == ",".join(Duplicate.__dataclass_fields__)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bombs_are_rejected_not_fatal(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "cat").mkdir(parents=True)
    shutil.copyfile(_photos("cat")[0], root / "cat" / "good.jpg")
    # 100 MP (over ImageLimits) and 400 MP (over Pillow's own bomb limit): headers only.
    (root / "cat" / "bomb_100mp.png").write_bytes(_png_header_only(10_000, 10_000))
    (root / "cat" / "bomb_400mp.png").write_bytes(_png_header_only(20_000, 20_000))
    dataset = load_dataset(root, image_size=SIZE)
    assert [s.path for s in dataset.samples] == ["cat/good.jpg"]
    assert {r.path: r.reason for r in dataset.rejected} == {
        "cat/bomb_100mp.png": "too_many_pixels",
        "cat/bomb_400mp.png": "too_many_pixels",
    }


def test_duplicates_of_a_bad_file_are_not_decoded_twice(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "a.jpg").touch()
    (root / "cat" / "b.jpg").touch()
    dataset = load_dataset(root, image_size=SIZE)
    assert dataset.samples == []
    assert [(r.path, r.reason) for r in dataset.rejected] == [("cat/a.jpg", "empty")]
    assert [(d.path, d.duplicate_of) for d in dataset.duplicates] == [("cat/b.jpg", "cat/a.jpg")]
