"""The service's container image, built once per session and shared by the container, kube-play
and Compose tests: `bentoml build`, then `bentoml containerize` with buildah (or podman) on
python:3.11-slim. Where no registry is reachable, scripts/offline_base_image.sh provides a
Debian stand-in for that base (it does nothing where the real image can be pulled). The build
installs the serving dependencies (ONNX Runtime, no TensorFlow) from the package index: a
minute or two. Its measurements are printed (`pytest -s`) and written to image_metrics.json in
the fixture's temporary folder."""

import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .tools import ROOT, podman_env, run

BENTOML_CLI = Path(sys.executable).parent / "bentoml"
PODMAN_MISSING = "podman is not installed (CI installs podman, buildah, runc and debootstrap)"


@dataclass
class ServiceImage:
    image: str
    bento_tag: str
    model_tag: str
    metrics: dict = field(default_factory=dict)


def _build_bento(model_tag: str) -> str:
    result = subprocess.run(
        [str(BENTOML_CLI), "build", "--output", "tag"],
        cwd=ROOT,
        env=podman_env(CATSDOGS_MODEL_TAG=model_tag),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"bentoml build failed:\n{result.stderr[-3000:]}"
    match = re.search(r"__tag__:(\S+)", result.stdout)
    assert match, f"no bento tag in the build output:\n{result.stdout}"
    return match.group(1)


@pytest.fixture(scope="session")
def service_image(trained_model, tmp_path_factory) -> Iterator[ServiceImage]:
    """Bento of the session's model -> base image (stand-in if needed) -> containerize."""
    if shutil.which("podman") is None:
        pytest.skip(PODMAN_MISSING)
    workdir = tmp_path_factory.mktemp("image")
    model_tag = trained_model.registered.bento_tag
    image = f"localhost/catsdogs-test:{uuid.uuid4().hex[:8]}"
    metrics: dict = {"image": image}
    try:
        started = time.monotonic()
        bento_tag = _build_bento(model_tag)
        metrics["bento"] = bento_tag
        metrics["bento_build_seconds"] = round(time.monotonic() - started, 1)

        started = time.monotonic()
        run("bash", ROOT / "scripts" / "offline_base_image.sh", timeout=900)
        metrics["base_image_seconds"] = round(time.monotonic() - started, 1)

        backend = "buildah" if shutil.which("buildah") else "podman"
        started = time.monotonic()
        run(
            BENTOML_CLI, "containerize", bento_tag,
            "--backend", backend, "--opt", "isolation=chroot", "--image-tag", image,
            timeout=2400,
        )  # fmt: skip
        metrics["containerize_seconds"] = round(time.monotonic() - started, 1)
        size = run("podman", "image", "inspect", "--format", "{{.Size}}", image)
        metrics["image_size_bytes"] = int(size.stdout.strip())
        yield ServiceImage(image, bento_tag, model_tag, metrics)
    finally:
        run("podman", "rmi", "-f", image, check=False, timeout=300)
        report = workdir / "image_metrics.json"
        report.write_text(json.dumps(metrics, indent=2))
        print(f"\nservice image ({report}):\n{json.dumps(metrics, indent=2)}")
