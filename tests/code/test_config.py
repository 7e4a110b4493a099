"""Tests for training.config.TrainConfig and catsdogs.config.ImageLimits."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from catsdogs.config import DEFAULT_IMAGE_SIZE, MODEL_NAME, ImageLimits
from training.config import DEFAULT_DATA_DIR, TrainConfig

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "data" / "sample"


# --- TrainConfig -------------------------------------------------------------------------------


def test_defaults() -> None:
    config = TrainConfig()
    assert config.mode == "fast"
    assert config.image_size == 288 == DEFAULT_IMAGE_SIZE
    assert config.seed == 42
    assert config.validation_fraction == pytest.approx(0.1)
    assert config.test_fraction == pytest.approx(0.1)
    assert config.registered_model == MODEL_NAME
    assert config.deterministic is True


def test_default_data_dir_is_the_committed_sample() -> None:
    config = TrainConfig()
    assert config.data_dir == DEFAULT_DATA_DIR
    assert config.data_dir.resolve() == SAMPLE_DIR
    assert config.data_dir.is_dir()
    for label in ("cat", "dog"):
        folder = config.data_dir / label
        assert folder.is_dir(), f"{folder} is missing"
        assert any(folder.glob("*.jpg")), f"{folder} has no photos"


@pytest.mark.parametrize("mode", ["fast", "finetune", "scratch"])
def test_every_mode_is_accepted(mode: str) -> None:
    assert TrainConfig(mode=mode).mode == mode


def test_unknown_field_is_an_error() -> None:
    with pytest.raises(ValidationError, match="epochs_typo"):
        TrainConfig(epochs_typo=3)


def test_unknown_mode_is_an_error() -> None:
    with pytest.raises(ValidationError, match="mode"):
        TrainConfig(mode="bogus")


@pytest.mark.parametrize(
    ("validation_fraction", "test_fraction"),
    [(0.5, 0.5), (0.6, 0.4), (0.3, 0.7), (0.9, 0.2)],
)
def test_fractions_that_leave_no_training_data_are_an_error(
    validation_fraction: float, test_fraction: float
) -> None:
    assert validation_fraction + test_fraction >= 1
    with pytest.raises(ValidationError):
        TrainConfig(validation_fraction=validation_fraction, test_fraction=test_fraction)


@pytest.mark.parametrize("field", ["validation_fraction", "test_fraction"])
@pytest.mark.parametrize("value", [0, -0.1])
def test_fractions_must_be_positive(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field):
        TrainConfig(**{field: value})


def test_valid_fractions_are_accepted() -> None:
    config = TrainConfig(validation_fraction=0.2, test_fraction=0.15)
    assert (config.validation_fraction, config.test_fraction) == (0.2, 0.15)


@pytest.mark.parametrize("image_size", [31, 0, -224])
def test_image_size_below_32_is_an_error(image_size: int) -> None:
    with pytest.raises(ValidationError, match="image_size"):
        TrainConfig(image_size=image_size)


def test_image_size_32_is_the_smallest_accepted() -> None:
    assert TrainConfig(image_size=32).image_size == 32


@pytest.mark.parametrize(
    ("field", "value"),
    [("batch_size", 0), ("head_epochs", 0), ("dropout", 1.0), ("head_learning_rate", 0.0)],
)
def test_other_bounds_are_checked(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        TrainConfig(**{field: value})


def test_config_is_frozen() -> None:
    config = TrainConfig()
    with pytest.raises(ValidationError):
        config.mode = "scratch"
    with pytest.raises(ValidationError):
        config.image_size = 64
    assert config.mode == "fast"
    assert config.image_size == DEFAULT_IMAGE_SIZE


def test_string_path_becomes_a_path(tmp_path: Path) -> None:
    config = TrainConfig(data_dir=str(tmp_path))
    assert isinstance(config.data_dir, Path)
    assert config.data_dir == tmp_path


def test_json_round_trip_of_defaults() -> None:
    config = TrainConfig()
    assert TrainConfig.model_validate_json(config.model_dump_json()) == config


def test_json_round_trip_of_a_custom_config(tmp_path: Path) -> None:
    config = TrainConfig(
        data_dir=tmp_path / "data",
        mode="finetune",
        seed=7,
        image_size=160,
        weights="/models/mobilenet.h5",
        head_learning_rate=3e-4,
        validation_fraction=0.15,
        test_fraction=0.05,
        flip=False,
        force_champion=True,
    )
    restored = TrainConfig.model_validate_json(config.model_dump_json())
    assert restored == config
    assert restored.data_dir == tmp_path / "data"
    assert restored != TrainConfig()


# --- ImageLimits -------------------------------------------------------------------------------


def test_image_limits_defaults() -> None:
    limits = ImageLimits()
    assert limits.max_bytes == 20 * 1024 * 1024
    assert limits.max_pixels == 40_000_000
    assert limits.min_side == 32
    assert limits.max_pixels < 10_000 * 10_000  # a 10000x10000 bomb is over the limit


@pytest.mark.parametrize("field", ["max_bytes", "max_pixels", "min_side"])
@pytest.mark.parametrize("value", [-1, 0])
def test_image_limits_must_be_positive(field: str, value: int) -> None:
    with pytest.raises(ValidationError, match=field):
        ImageLimits(**{field: value})


def test_image_limits_accept_custom_values_and_are_frozen() -> None:
    limits = ImageLimits(max_bytes=1000, max_pixels=5000, min_side=300)
    assert (limits.max_bytes, limits.max_pixels, limits.min_side) == (1000, 5000, 300)
    with pytest.raises(ValidationError):
        limits.min_side = 1
    assert limits.min_side == 300


def test_service_settings_share_the_cores_among_the_workers(monkeypatch):
    from catsdogs import settings

    monkeypatch.setattr(settings, "available_cores", lambda: 4)
    defaults = settings.ServiceSettings()
    assert (defaults.worker_count, defaults.threads_per_worker) == (1, 4)
    monkeypatch.setenv("CATSDOGS_WORKERS", "0")
    per_core = settings.ServiceSettings()
    assert (per_core.worker_count, per_core.threads_per_worker) == (4, 1)
    monkeypatch.setenv("CATSDOGS_WORKERS", "3")
    monkeypatch.setenv("CATSDOGS_THREADS", "2")
    assert (
        settings.ServiceSettings().worker_count,
        settings.ServiceSettings().threads_per_worker,
    ) == (3, 2)
    monkeypatch.delenv("CATSDOGS_THREADS")
    monkeypatch.setenv("CATSDOGS_WORKERS", "8")
    assert settings.ServiceSettings().threads_per_worker == 1


def test_service_settings_read_every_variable(monkeypatch, tmp_path):
    from catsdogs.settings import ServiceSettings

    variables = {
        "CATSDOGS_MODEL_TAG": "catsdogs:abc",
        "CATSDOGS_MAX_BYTES": "1000",
        "CATSDOGS_MAX_PIXELS": "5000",
        "CATSDOGS_MIN_SIDE": "40",
        "CATSDOGS_MAX_FILES": "3",
        "CATSDOGS_MAX_BATCH_SIZE": "4",
        "CATSDOGS_MAX_QUEUE": "9",
        "CATSDOGS_MONITORING_DIR": str(tmp_path),
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    loaded = ServiceSettings()
    assert loaded.model_tag == "catsdogs:abc"
    assert loaded.limits == ImageLimits(max_bytes=1000, max_pixels=5000, min_side=40)
    assert (loaded.max_files, loaded.max_batch_size, loaded.max_queue) == (3, 4, 9)
    assert loaded.monitoring_dir == tmp_path
    assert loaded.max_body_bytes(1) < loaded.max_body_bytes(3)


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("CATSDOGS_MAX_BYTES", "two", "valid integer"),
        ("CATSDOGS_WORKERS", "two", "valid integer"),
        ("CATSDOGS_MAX_BATCH_SIZE", "0", "greater than 0"),
        ("CATSDOGS_MIN_SIDE", "-5", "greater than 0"),
    ],
)
def test_a_bad_setting_stops_with_one_line_naming_it(monkeypatch, capsys, variable, value, words):
    from catsdogs.settings import load_settings

    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as stopped:
        load_settings()
    assert stopped.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"catsdogs: invalid setting {variable}={value!r}")
    assert words in line
