"""The committed non-pet photo set (data/nonpet) is complete, intact and documented.

The set only ever measures the "other" answer, never tunes it (see SOURCES.md there).
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from helpers import NONPET_DIR

MANIFEST = NONPET_DIR / "manifest.csv"
SOURCES = NONPET_DIR / "SOURCES.md"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
CATEGORIES = {"person", "animal", "object", "food", "scene", "drawing", "screenshot"}
MAX_SIDE = 512
MAX_TOTAL_BYTES = 5 * 1024 * 1024


def _manifest() -> list[dict[str, str]]:
    with MANIFEST.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["file", "category", "sha256"]
        return list(reader)


def _images() -> list[Path]:
    return sorted(p for p in NONPET_DIR.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def test_at_least_fifty_images() -> None:
    assert len(_images()) >= 50


def test_folder_holds_only_images_and_their_records() -> None:
    others = {p.name for p in NONPET_DIR.iterdir() if p.suffix.lower() not in IMAGE_SUFFIXES}
    assert others == {"manifest.csv", "SOURCES.md"}


def test_manifest_matches_files_and_checksums() -> None:
    rows = _manifest()
    listed = [row["file"] for row in rows]
    assert len(listed) == len(set(listed)), "a file is listed twice in manifest.csv"
    assert set(listed) == {p.name for p in _images()}
    for row in rows:
        digest = hashlib.sha256((NONPET_DIR / row["file"]).read_bytes()).hexdigest()
        assert digest == row["sha256"], f"{row['file']} changed; its sha256 is {digest}"


def test_categories_follow_the_file_names() -> None:
    for row in _manifest():
        assert row["category"] in CATEGORIES, row
        assert row["file"].startswith(row["category"] + "-"), row


def test_every_category_is_represented() -> None:
    counts = Counter(row["category"] for row in _manifest())
    assert set(counts) == CATEGORIES
    assert min(counts.values()) >= 3, counts
    assert counts["animal"] >= 10, counts


def test_every_file_has_a_provenance_row() -> None:
    table = [line for line in SOURCES.read_text(encoding="utf-8").splitlines() if line[:1] == "|"]
    documented = {line.split("|")[1].strip().strip("`") for line in table}
    missing = {p.name for p in _images()} - documented
    assert not missing, f"not in SOURCES.md: {sorted(missing)}"


@pytest.mark.parametrize("path", _images(), ids=lambda p: p.name)
def test_image_decodes_and_is_small(path: Path) -> None:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        image.load()
        assert image.mode == "RGB"
        assert max(image.size) <= MAX_SIDE, image.size


def test_total_size_is_small() -> None:
    total = sum(p.stat().st_size for p in NONPET_DIR.iterdir() if p.is_file())
    assert total < MAX_TOTAL_BYTES, total
