"""Tests for training.data: the split is a deterministic, stable function of content."""

from __future__ import annotations

import hashlib
import random
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from helpers import FULL_DATA_DIR, SAMPLE_DIR, photos
from training.data import SPLITS, assign_split, load_dataset

SIZE = 32


def _random_hashes(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [hashlib.sha256(rng.randbytes(16)).hexdigest() for _ in range(count)]


def _fractions(splits: list[str]) -> dict[str, float]:
    counts = Counter(splits)
    return {split: counts[split] / len(splits) for split in SPLITS}


def _copy_sample(root: Path) -> None:
    for label in ("cat", "dog"):
        shutil.copytree(SAMPLE_DIR / label, root / label)


# --- assign_split ------------------------------------------------------------------------------


def test_assign_split_is_a_pure_function_of_the_hash() -> None:
    hashes = _random_hashes(500, seed=1)
    first = [assign_split(h) for h in hashes]
    again = [assign_split(h) for h in reversed(hashes)][::-1]
    assert first == again
    assert set(first) == set(SPLITS)


def test_assign_split_known_positions() -> None:
    assert assign_split("0" * 64) == "train"
    assert assign_split("cb" + "f" * 62) == "train"  # 0.79687, just below 0.8
    assert assign_split("cd" + "0" * 62) == "validation"  # 0.80078
    assert assign_split("e" + "0" * 63) == "validation"  # 0.875
    assert assign_split("e8" + "0" * 62) == "test"  # 0.90625
    assert assign_split("f" * 64) == "test"
    # Only the first 16 hex digits count.
    assert assign_split("e" * 16 + "0" * 48) == assign_split("e" * 16 + "f" * 48)


def test_assign_split_distribution_is_80_10_10() -> None:
    fractions = _fractions([assign_split(h) for h in _random_hashes(10_000)])
    assert fractions["train"] == pytest.approx(0.8, abs=0.02)
    assert fractions["validation"] == pytest.approx(0.1, abs=0.02)
    assert fractions["test"] == pytest.approx(0.1, abs=0.02)


def test_assign_split_honours_custom_fractions() -> None:
    splits = [assign_split(h, 0.3, 0.2) for h in _random_hashes(10_000, seed=2)]
    fractions = _fractions(splits)
    assert fractions["train"] == pytest.approx(0.5, abs=0.02)
    assert fractions["validation"] == pytest.approx(0.3, abs=0.02)
    assert fractions["test"] == pytest.approx(0.2, abs=0.02)
    assert assign_split("8" + "0" * 63, 0.3, 0.2) == "validation"  # position 0.5


def test_growing_a_fraction_only_moves_files_into_that_split() -> None:
    # The split boundaries are fixed positions: a larger test fraction takes files from
    # validation (and validation from train), never shuffles the rest.
    for digest in _random_hashes(2_000, seed=3):
        before = assign_split(digest, 0.1, 0.1)
        after = assign_split(digest, 0.1, 0.15)
        assert after == before or (before, after) in {
            ("validation", "test"),
            ("train", "validation"),
        }


# --- load_dataset ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("split") / "data"
    _copy_sample(root)
    return root


def test_split_follows_the_content_hash(sample_root: Path) -> None:
    dataset = load_dataset(sample_root, image_size=SIZE)
    assert len(dataset.samples) == 200
    for sample in dataset.samples:
        digest = hashlib.sha256((sample_root / sample.path).read_bytes()).hexdigest()
        assert sample.sha256 == digest
        assert sample.split == assign_split(digest)
    # 200 photos land in all three splits, so keeping a split is not trivially true.
    assert {s.split for s in dataset.samples} == set(SPLITS)


def test_loading_twice_is_identical(sample_root: Path) -> None:
    first = load_dataset(sample_root, image_size=SIZE)
    second = load_dataset(sample_root, image_size=SIZE, workers=1)
    assert first.samples == second.samples
    assert first.fingerprint == second.fingerprint
    np.testing.assert_array_equal(first.pixels, second.pixels)
    assert len(first.fingerprint) == 64


def test_custom_fractions_reach_the_samples(sample_root: Path) -> None:
    dataset = load_dataset(sample_root, image_size=SIZE, validation_fraction=0.3, test_fraction=0.2)
    for sample in dataset.samples:
        assert sample.split == assign_split(sample.sha256, 0.3, 0.2)
    assert dataset.fingerprint != load_dataset(sample_root, image_size=SIZE).fingerprint


def _new_photos(sources: list[Path], target: Path) -> None:
    """Different bytes of the same animals: mirrored and re-encoded at another quality."""
    target.mkdir(parents=True, exist_ok=True)
    for i, source in enumerate(sources):
        with Image.open(source) as image:
            ImageOps.mirror(image.convert("RGB")).save(target / f"new_{i}.jpg", quality=70)


def test_adding_photos_keeps_every_old_split(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _copy_sample(root)
    before = load_dataset(root, image_size=SIZE)
    old_splits = {s.path: s.split for s in before.samples}

    _new_photos(photos("cat")[:10], root / "cat")
    _new_photos(photos("dog")[:10], root / "dog")
    after = load_dataset(root, image_size=SIZE)

    assert after.duplicates == []
    assert len(after.samples) == len(before.samples) + 20
    new_splits = {s.path: s.split for s in after.samples}
    assert {path: new_splits[path] for path in old_splits} == old_splits
    assert after.fingerprint != before.fingerprint
    old_hashes = {s.sha256 for s in before.samples}
    assert sum(s.sha256 not in old_hashes for s in after.samples) == 20


def test_renaming_or_moving_a_file_keeps_its_split(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _copy_sample(root)
    before = load_dataset(root, image_size=SIZE)
    by_hash = {s.sha256: s for s in before.samples}

    cats = photos("cat", root)
    dogs = photos("dog", root)
    cats[0].rename(root / "cat" / "renamed.jpg")
    (root / "more" / "cats").mkdir(parents=True)
    cats[1].rename(root / "more" / "cats" / "moved.jpg")
    (root / "train" / "dog").mkdir(parents=True)
    dogs[0].rename(root / "train" / "dog" / "moved_dog.jpg")
    after = load_dataset(root, image_size=SIZE)

    moved = {"cat/renamed.jpg", "more/cats/moved.jpg", "train/dog/moved_dog.jpg"}
    assert moved <= {s.path for s in after.samples}
    for sample in after.samples:
        original = by_hash[sample.sha256]
        assert sample.split == original.split
        assert sample.label == original.label
    # Same content, labels and splits: the same data, whatever the file names.
    assert after.fingerprint == before.fingerprint


def test_relabelling_a_file_changes_the_fingerprint(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _copy_sample(root)
    before = load_dataset(root, image_size=SIZE)
    photos("cat", root)[0].rename(root / "dog" / "was_a_cat.jpg")
    after = load_dataset(root, image_size=SIZE)
    assert after.fingerprint != before.fingerprint


@pytest.mark.skipif(not FULL_DATA_DIR.is_dir(), reason=f"no full data set at {FULL_DATA_DIR}")
def test_full_dataset_split_is_80_10_10() -> None:
    dataset = load_dataset(FULL_DATA_DIR, image_size=32)
    assert len(dataset.samples) >= 1000
    fractions = _fractions([s.split for s in dataset.samples])
    assert fractions["train"] == pytest.approx(0.8, abs=0.03)
    assert fractions["validation"] == pytest.approx(0.1, abs=0.03)
    assert fractions["test"] == pytest.approx(0.1, abs=0.03)
    # Both classes are present in every split.
    for split, counts in dataset.counts().items():
        assert counts["cat"] > 0 and counts["dog"] > 0, split
