"""Tests for training.data: labels found in every supported folder layout (real sample photos)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import SAMPLE_DIR
from helpers import photos as sample_photos
from training.data import Rejected, find_labelled_files, load_dataset

SIZE = 64


def _photos(label: str) -> list[Path]:
    photos = sample_photos(label)
    assert len(photos) >= 8, f"too few sample photos in {SAMPLE_DIR / label}"
    return photos


class Layout:
    """Builds a data set folder and remembers which label each file must get."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.expected: dict[str, str] = {}  # relative path -> label
        self.unlabelled: set[str] = set()
        self._next = {"cat": 0, "dog": 0}

    def photo(self, relative: str, label: str) -> None:
        """Copy a not yet used real photo of `label` to root/relative."""
        source = _photos(label)[self._next[label]]
        self._next[label] += 1
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        self.expected[relative] = label

    def unlabelled_photo(self, relative: str) -> None:
        source = _photos("dog")[-1]  # a photo, but nothing in its path names a class
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        self.unlabelled.add(relative)

    def text(self, relative: str) -> None:
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("Cats and dogs data set.\n")
        self.unlabelled.add(relative)


def _class_folders(layout: Layout) -> None:
    for label in ("cat", "dog"):
        for i in range(3):
            layout.photo(f"{label}/{label}.{i}.jpg", label)
    layout.text("README.md")


def _train_subfolder(layout: Layout) -> None:
    for label in ("cat", "dog"):
        for i in range(3):
            layout.photo(f"train/{label}/{i}.jpg", label)
    layout.unlabelled_photo("train/unsorted.jpg")


def _pet_images(layout: Layout) -> None:
    # Kaggle/Microsoft: capitalised folders, the same numeric file names in both.
    for folder, label in (("Cat", "cat"), ("Dog", "dog")):
        for i in range(3):
            layout.photo(f"PetImages/{folder}/{i}.jpg", label)
    layout.text("MSR-LA - 3467.docx")
    layout.text("readme[1].txt")


def _training_and_test_sets(layout: Layout) -> None:
    for top in ("training_set", "test_set"):
        for folder, label in (("cats", "cat"), ("dogs", "dog")):
            for i in range(2):
                layout.photo(f"{top}/{top}/{folder}/{label}.{top}.{i}.jpg", label)


def _flat_competition(layout: Layout) -> None:
    # Kaggle competition: labels in the file names of train/, test1/ has none.
    for label in ("cat", "dog"):
        for i in range(3):
            layout.photo(f"train/{label}.{i + 1}.jpg", label)
    layout.unlabelled_photo("test1/12.jpg")
    layout.unlabelled_photo("test1/13.jpg")
    layout.text("sampleSubmission.csv")


def _folder_beats_file_name(layout: Layout) -> None:
    layout.photo("cat/dog.1.jpg", "cat")
    layout.photo("dogs/cat.7.jpg", "dog")
    layout.photo("misc/dog_2.jpg", "dog")
    layout.photo("misc/Cat-3.jpg", "cat")
    layout.photo("cats/dog/inner.jpg", "dog")  # the innermost class folder wins


LAYOUTS: dict[str, Callable[[Layout], None]] = {
    "class_folders": _class_folders,
    "train_subfolder": _train_subfolder,
    "pet_images": _pet_images,
    "training_and_test_sets": _training_and_test_sets,
    "flat_competition": _flat_competition,
    "folder_beats_file_name": _folder_beats_file_name,
}


@pytest.fixture(params=sorted(LAYOUTS))
def layout(request: pytest.FixtureRequest, tmp_path: Path) -> Layout:
    built = Layout(tmp_path / "data")
    LAYOUTS[request.param](built)
    assert built.expected
    assert set(built.expected.values()) == {"cat", "dog"}
    return built


def test_find_labelled_files_labels_every_file(layout: Layout) -> None:
    labelled, unlabelled = find_labelled_files(layout.root)
    found = {path.relative_to(layout.root).as_posix(): label for path, label in labelled}
    assert found == layout.expected
    assert all(path.is_file() for path, _ in labelled)
    assert {r.path for r in unlabelled} == layout.unlabelled
    assert all(isinstance(r, Rejected) and r.reason == "unlabelled" for r in unlabelled)


def test_load_dataset_labels_every_photo(layout: Layout) -> None:
    dataset = load_dataset(layout.root, image_size=SIZE)
    assert {s.path: s.label for s in dataset.samples} == layout.expected
    assert {r.path for r in dataset.rejected if r.reason == "unlabelled"} == layout.unlabelled
    assert {r.reason for r in dataset.rejected} <= {"unlabelled"}
    assert dataset.duplicates == []
    assert dataset.pixels.shape == (len(layout.expected), SIZE, SIZE, 3)
    # Integer labels follow CLASS_NAMES order.
    assert list(dataset.labels()) == [dataset.class_names.index(s.label) for s in dataset.samples]
    assert dataset.class_names == ("cat", "dog")
    assert sum(sum(c.values()) for c in dataset.counts().values()) == len(layout.expected)


def test_relative_root_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = Layout(tmp_path / "data")
    _class_folders(layout)
    monkeypatch.chdir(tmp_path)
    labelled, _ = find_labelled_files(Path("data"))
    assert {p.relative_to("data").as_posix(): label for p, label in labelled} == layout.expected
    dataset = load_dataset(Path("data"), image_size=SIZE)
    assert {s.path: s.label for s in dataset.samples} == layout.expected


def test_empty_folder_gives_an_empty_dataset(tmp_path: Path) -> None:
    assert find_labelled_files(tmp_path) == ([], [])
    dataset = load_dataset(tmp_path, image_size=SIZE)
    assert dataset.samples == []
    assert dataset.pixels.shape == (0, SIZE, SIZE, 3)


def test_missing_folder_is_file_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_labelled_files(missing)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_dataset(missing, image_size=SIZE)


def test_a_file_instead_of_a_folder_is_file_not_found(tmp_path: Path) -> None:
    file = tmp_path / "cat.1.jpg"
    shutil.copyfile(_photos("cat")[0], file)
    with pytest.raises(FileNotFoundError):
        find_labelled_files(file)
