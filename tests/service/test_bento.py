"""The deployable Bento: `bentoml build` from bentofile.yaml packs the serving code only, pins
the trained model and the runtime dependencies, and serves real photos from the bento store."""

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from helpers import ROOT, default_precision, photos, run_bentoml_serve

BENTOML_CLI = Path(sys.executable).parent / "bentoml"


@dataclass(frozen=True)
class BuiltBento:
    tag: str
    path: Path
    info: dict
    model_tag: str


def _bentoml(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    result = subprocess.run(
        [str(BENTOML_CLI), *args],
        cwd=ROOT,
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"bentoml {' '.join(args)} failed:\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def built_bento(trained_model) -> BuiltBento:
    """`bentoml build` in the repository root, pinned to the session's trained model."""
    model_tag = trained_model.registered.bento_tag
    output = _bentoml(
        "build", "--output", "tag", env={**os.environ, "CATSDOGS_MODEL_TAG": model_tag}
    )
    match = re.search(r"__tag__:(\S+)", output)
    assert match, f"no bento tag in the build output:\n{output}"
    tag = match.group(1)
    info = json.loads(_bentoml("get", tag, "--output", "json"))
    path = Path(_bentoml("get", tag, "--output", "path").strip())
    return BuiltBento(tag, path, info, model_tag)


def test_bento_packs_the_serving_code_only(built_bento):
    src = built_bento.path / "src"
    files = {p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()}
    assert "service.py" in files
    assert "catsdogs/__init__.py" in files
    assert {f"catsdogs/{p.name}" for p in (ROOT / "catsdogs").glob("*.py")} <= files
    # The pages' own files: the docs page and the upload page (/app).
    assert {f"catsdogs/web/{p.name}" for p in (ROOT / "catsdogs" / "web").iterdir()} <= files
    for excluded in ("training/", "tests/", "data/", ".venv/", "mlruns/"):
        assert not [f for f in files if f.startswith(excluded)], excluded
    assert not [f for f in files if f.endswith((".jpg", ".keras", ".db"))]


def test_bentofile_ships_exactly_the_runtime_dependencies():
    bentofile = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert sorted(bentofile["python"]["packages"]) == sorted(project["dependencies"])


def test_bento_pins_the_model_and_the_runtime_dependencies(built_bento):
    info = built_bento.info
    assert info["service"] == "service:CatsDogs"
    assert info["labels"]["project"] == "catsdogs"
    models = {m["tag"] for s in info["services"] for m in s["models"]} | {
        m["tag"] for m in info.get("models", [])
    }
    assert built_bento.model_tag in models

    requirements = (built_bento.path / "env" / "python" / "requirements.txt").read_text()
    pins = set(requirements.split())
    for package in ("bentoml", "onnxruntime", "numpy", "pillow", "pydantic", "uvloop"):
        assert f"{package}=={importlib.metadata.version(package)}" in pins, package
    # Serving runs the ONNX export: TensorFlow and Keras are training-only.
    for training_only in ("mlflow", "scikit-learn", "matplotlib", "typer", "tensorflow", "keras"):
        assert not [p for p in pins if p.startswith(f"{training_only}==")], training_only
    dockerfile = (built_bento.path / "env" / "docker" / "Dockerfile").read_text()
    assert "python:3.11" in dockerfile


def test_built_bento_serves_real_photos(built_bento, tmp_path):
    cat, dog = photos("cat")[0], photos("dog")[0]
    # A Bento tag, not a module: `bentoml serve` runs the code copied into the bento store.
    with run_bentoml_serve(built_bento.tag, tmp_path, built_bento.model_tag) as server:
        for photo, label in ((cat, "cat"), (dog, "dog")):
            response = httpx.post(
                f"{server.url}/predict",
                files={"file": (photo.name, photo.read_bytes())},
                timeout=120,
            )
            assert response.status_code == 200, response.text
            assert response.json()["label"] == label, response.json()
            assert response.json()["model"] == built_bento.model_tag
        health = httpx.get(f"{server.url}/health", timeout=30)
        assert health.status_code == 200
        assert health.json() == {
            "status": "ok",
            "model": built_bento.model_tag,
            "precision": default_precision(built_bento.model_tag),
        }
