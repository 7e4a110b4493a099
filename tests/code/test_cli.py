"""The command line: user errors give one clear line and exit code 1, never a traceback."""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from helpers import SAMPLE_DIR, free_port, photos
from training.architectures import WeightsUnavailableError, build_backbone
from training.cli import app
from training.config import TrainConfig

runner = CliRunner()


def test_data_command_reports_counts_and_writes_the_manifest(tmp_path):
    data = tmp_path / "photos"
    for label in ("cat", "dog"):
        (data / label).mkdir(parents=True)
        for path in photos(label)[:10]:
            shutil.copy(path, data / label / path.name)
    (data / "cat" / "broken.jpg").write_bytes(b"")
    shutil.copy(photos("dog")[0], data / "dog" / "copy.jpg")

    result = runner.invoke(app, ["data", str(data), "--out", str(tmp_path / "out")])

    assert result.exit_code == 0, result.output
    assert "valid images:  20" in result.stdout
    assert "rejected:      1 {'empty': 1}" in result.stdout
    assert "duplicates:    1" in result.stdout
    with open(tmp_path / "out" / "manifest.csv") as file:
        assert len(list(csv.DictReader(file))) == 20


@pytest.mark.parametrize(
    "arguments",
    [
        ["data", "/no/such/folder"],
        ["train", "/no/such/folder"],
        ["train", str(SAMPLE_DIR), "--image-size", "8"],
        ["evaluate", str(SAMPLE_DIR), "--model", "catsdogs:doesnotexist"],
    ],
)
def test_user_errors_are_one_line_not_a_traceback(arguments):
    result = runner.invoke(app, arguments)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") or "\nerror: " in result.output
    assert "Traceback" not in result.output


def test_missing_pretrained_weights_say_how_to_provide_them(tmp_path):
    # An empty Keras cache, and downloads routed to a closed local port: no weights anywhere.
    # A subprocess, because Keras reads KERAS_HOME once, at import.
    closed_proxy = f"http://127.0.0.1:{free_port()}"
    environment = {
        **{k: v for k, v in os.environ.items() if k.lower() != "no_proxy"},
        "KERAS_HOME": str(tmp_path / "keras"),
        **dict.fromkeys(("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"), closed_proxy),
    }
    result = subprocess.run(
        [sys.executable, "-m", "training.cli", "train", str(SAMPLE_DIR)],
        env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    message = result.stderr[result.stderr.index("error: ") :]
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5" in message
    assert str(tmp_path / "keras" / "models") in message
    assert "--weights" in message and "--mode scratch" in message
    assert "Traceback" not in result.stderr


def test_weights_file_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="could not load MobileNetV2 weights"):
        build_backbone(TrainConfig(weights=str(tmp_path / "missing.h5")))


@pytest.fixture
def trained_configs(monkeypatch):
    """The TrainConfig each `catsdogs train` would train, without training."""
    import training.train
    from training.tracking import RegisteredModel
    from training.train import TrainResult

    configs = []

    def fake_train(config, progress):
        configs.append(config)
        metrics = {"accuracy": 1.0, "log_loss": 0.1, "count": 2}
        registered = RegisteredModel("1", "models:/catsdogs/1", "catsdogs:x", True, "first")
        return TrainResult("run", metrics, registered, {}, open_world=None)

    monkeypatch.setattr(training.train, "train", fake_train)
    return configs


def _config_file(tmp_path, **values) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    return str(path)


def test_train_config_file_alone_decides(tmp_path, trained_configs):
    config_file = _config_file(
        tmp_path, mode="finetune", seed=7, image_size=96, head_epochs=2, data_dir=str(tmp_path)
    )
    result = runner.invoke(app, ["train", "--config", config_file, "--verbose"])
    assert result.exit_code == 0, result.output
    [config] = trained_configs
    assert (config.mode, config.seed, config.image_size, config.head_epochs) == (
        "finetune",
        7,
        96,
        2,
    )
    assert config.data_dir == tmp_path
    assert config.weights == TrainConfig().weights and config.force_champion is False
    assert "bentoml serve" in result.output


def test_train_options_given_override_the_config_file(tmp_path, trained_configs):
    config_file = _config_file(tmp_path, mode="finetune", seed=7, batch_size=8)
    arguments = ["train", str(SAMPLE_DIR), "--config", config_file, "--seed", "3",
                 "--force-champion", "--verbose"]  # fmt: skip
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    [config] = trained_configs
    assert (config.mode, config.batch_size) == ("finetune", 8)  # from the file
    assert (config.seed, config.force_champion, config.data_dir) == (3, True, SAMPLE_DIR)


def test_train_options_alone_and_defaults_come_from_train_config(trained_configs):
    result = runner.invoke(app, ["train", "--mode", "scratch", "--head-epochs", "4", "--verbose"])
    assert result.exit_code == 0, result.output
    [config] = trained_configs
    assert config == TrainConfig(mode="scratch", head_epochs=4)


def test_train_help_shows_train_config_defaults():
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    defaults = TrainConfig()
    for value in (defaults.seed, defaults.head_epochs, defaults.image_size, defaults.mode):
        assert f"[default: ({value})]" in result.output


@pytest.mark.parametrize(
    "content", ['{"mode": "turbo"}', '{"no_such_field": 1}', "[1, 2]", "{not json"]
)
def test_a_bad_config_file_is_one_clear_error(tmp_path, trained_configs, content):
    path = tmp_path / "bad.json"
    path.write_text(content)
    result = runner.invoke(app, ["train", "--config", str(path), "--verbose"])
    assert result.exit_code == 1, result.output
    assert "error: " in result.output and "Traceback" not in result.output
    assert not trained_configs
