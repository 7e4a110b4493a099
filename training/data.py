"""Find labelled photos in any common layout, validate and deduplicate them, split them.

Layouts understood (labels come from folder names or, failing that, file names):
  DIR/{cat,dog}/...                      DIR/train/{cat,dog}/...
  PetImages/{Cat,Dog}/... (Kaggle/Microsoft)
  training_set/{cats,dogs} + test_set/{cats,dogs} (at any depth)
  cat.123.jpg, dog.45.jpg in one folder (Kaggle competition)

Every file is read once: exact duplicates (same SHA-256) are dropped before decoding; every
other file is fully decoded and preprocessed once, and whatever fails (empty, non-image,
corrupt, truncated, tiny, oversized) is reported with its reason and skipped.

The train/validation/test split is a function of each file's content hash alone, so it is
deterministic, and adding files never moves the files already there.
"""

import csv
import hashlib
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from catsdogs.config import CLASS_NAMES
from catsdogs.errors import RefusedInput
from catsdogs.preprocessing import prepare_image

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
_FILE_NAME_LABEL = re.compile(r"^([a-z]+)[._\- ]", re.IGNORECASE)


@dataclass(frozen=True)
class Sample:
    path: str  # relative to the data set root
    label: str
    split: str
    sha256: str
    width: int
    height: int


@dataclass(frozen=True)
class Rejected:
    path: str
    reason: str
    detail: str


@dataclass(frozen=True)
class Duplicate:
    path: str
    duplicate_of: str
    sha256: str
    same_label: bool


@dataclass
class Dataset:
    """Valid, unique samples with their preprocessed pixels (row i belongs to samples[i])."""

    root: Path
    image_size: int
    samples: list[Sample]
    pixels: np.ndarray
    rejected: list[Rejected] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    class_names: tuple[str, ...] = CLASS_NAMES

    @property
    def fingerprint(self) -> str:
        """SHA-256 over every sample's content hash, label and split: names the exact data."""
        lines = sorted(f"{s.sha256}\t{s.label}\t{s.split}\n" for s in self.samples)
        return hashlib.sha256("".join(lines).encode()).hexdigest()

    def labels(self) -> np.ndarray:
        return np.array([self.class_names.index(s.label) for s in self.samples], np.int64)

    def select(self, split: str) -> tuple[np.ndarray, np.ndarray, list[Sample]]:
        """Pixels, integer labels and samples of one split."""
        index = np.array([i for i, s in enumerate(self.samples) if s.split == split], np.int64)
        return self.pixels[index], self.labels()[index], [self.samples[i] for i in index]

    def counts(self) -> dict[str, dict[str, int]]:
        """{split: {label: count}}."""
        table = {split: dict.fromkeys(self.class_names, 0) for split in SPLITS}
        for sample in self.samples:
            table[sample.split][sample.label] += 1
        return table

    def summary(self) -> dict[str, object]:
        return {
            "valid": len(self.samples),
            "rejected": len(self.rejected),
            "rejected_by_reason": dict(Counter(r.reason for r in self.rejected)),
            "duplicates": len(self.duplicates),
            "duplicates_with_other_label": sum(not d.same_label for d in self.duplicates),
            "splits": self.counts(),
            "fingerprint": self.fingerprint,
        }

    def write_reports(self, out_dir: Path) -> dict[str, Path]:
        """Write manifest.csv (the split), rejected.csv and duplicates.csv into out_dir."""
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {
            "manifest": out_dir / "manifest.csv",
            "rejected": out_dir / "rejected.csv",
            "duplicates": out_dir / "duplicates.csv",
        }
        _write_csv(paths["manifest"], Sample, self.samples)
        _write_csv(paths["rejected"], Rejected, self.rejected)
        _write_csv(paths["duplicates"], Duplicate, self.duplicates)
        return paths


def find_labelled_files(
    root: Path, class_names: Sequence[str] = CLASS_NAMES
) -> tuple[list[tuple[Path, str]], list[Rejected]]:
    """All files under root with a label from a folder or file name; the rest as unlabelled."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    labelled, unlabelled = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        label = _label_from_folders(relative.parts[:-1], class_names) or _label_from_file_name(
            relative.name, class_names
        )
        if label:
            labelled.append((path, label))
        else:
            unlabelled.append(
                Rejected(relative.as_posix(), "unlabelled", "no cat/dog folder or file name")
            )
    return labelled, unlabelled


def assign_split(sha256: str, validation_fraction: float = 0.1, test_fraction: float = 0.1) -> str:
    """The split of a file, from its content hash alone (uniform on [0, 1))."""
    position = int(sha256[:16], 16) / 16**16
    if position < 1 - validation_fraction - test_fraction:
        return "train"
    if position < 1 - test_fraction:
        return "validation"
    return "test"


def load_dataset(
    root: Path,
    image_size: int,
    *,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    class_names: Sequence[str] = CLASS_NAMES,
    workers: int | None = None,
) -> Dataset:
    """Scan, validate, deduplicate, split and preprocess every labelled image under root."""
    root = Path(root)
    labelled, rejected = find_labelled_files(root, class_names)
    unique: list[tuple[Path, str, str, bytes]] = []
    first_by_hash: dict[str, tuple[str, str]] = {}
    duplicates: list[Duplicate] = []
    for path, label in labelled:
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        relative = path.relative_to(root).as_posix()
        if digest in first_by_hash:
            first_path, first_label = first_by_hash[digest]
            duplicates.append(Duplicate(relative, first_path, digest, first_label == label))
            continue
        first_by_hash[digest] = (relative, label)
        unique.append((path, label, digest, data))

    pixels = np.empty((len(unique), image_size, image_size, 3), np.uint8)
    samples: list[Sample] = []

    def prepare(item: tuple[Path, str, str, bytes]):
        try:
            return prepare_image(item[3], image_size)
        except RefusedInput as error:
            return error

    # Pillow releases the GIL while decoding and resizing, so threads use every core.
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        for (path, label, digest, _), result in zip(unique, pool.map(prepare, unique), strict=True):
            relative = path.relative_to(root).as_posix()
            if isinstance(result, RefusedInput):
                rejected.append(Rejected(relative, result.reason, str(result)))
                continue
            pixels[len(samples)] = result.pixels
            split = assign_split(digest, validation_fraction, test_fraction)
            samples.append(Sample(relative, label, split, digest, result.width, result.height))
    dataset = Dataset(
        root=root,
        image_size=image_size,
        samples=samples,
        pixels=pixels[: len(samples)],
        rejected=sorted(rejected, key=lambda r: r.path),
        duplicates=duplicates,
        class_names=tuple(class_names),
    )
    summary = dataset.summary()
    logger.info(
        "data %s: %d valid, %d rejected %s, %d duplicates, splits %s, fingerprint %s",
        root,
        summary["valid"],
        summary["rejected"],
        summary["rejected_by_reason"],
        summary["duplicates"],
        summary["splits"],
        dataset.fingerprint[:12],
    )
    return dataset


def _label_from_folders(folders: Iterable[str], class_names: Sequence[str]) -> str | None:
    # The innermost folder that names a class wins (e.g. training_set/training_set/cats).
    for folder in reversed(list(folders)):
        label = _normalise_label(folder, class_names)
        if label:
            return label
    return None


def _label_from_file_name(name: str, class_names: Sequence[str]) -> str | None:
    match = _FILE_NAME_LABEL.match(name)
    return _normalise_label(match.group(1), class_names) if match else None


def _normalise_label(name: str, class_names: Sequence[str]) -> str | None:
    word = name.lower()
    for candidate in (word, word.removesuffix("s")):
        if candidate in class_names:
            return candidate
    return None


def _write_csv(path: Path, row_type: type, rows: Sequence[object]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(row_type.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)
