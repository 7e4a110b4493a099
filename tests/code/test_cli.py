"""The command line: user errors give one clear line and exit code 1, never a traceback."""

import csv
import os
import shutil
import socket
import subprocess
import sys

import pytest
from conftest import SAMPLE_DIR
from typer.testing import CliRunner

from training.cli import app
from training.config import TrainConfig
from training.model import WeightsUnavailableError, build_backbone

runner = CliRunner()


def test_data_command_reports_counts_and_writes_the_manifest(tmp_path):
    data = tmp_path / "photos"
    for label in ("cat", "dog"):
        (data / label).mkdir(parents=True)
        for path in sorted((SAMPLE_DIR / label).glob("*.jpg"))[:10]:
            shutil.copy(path, data / label / path.name)
    (data / "cat" / "broken.jpg").write_bytes(b"")
    shutil.copy(sorted((SAMPLE_DIR / "dog").glob("*.jpg"))[0], data / "dog" / "copy.jpg")

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
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_proxy = f"http://127.0.0.1:{probe.getsockname()[1]}"
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
