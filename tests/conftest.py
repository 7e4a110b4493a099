"""Shared fixtures. Every store the tests write to lives in one temporary folder: the tests
never touch the user's ~/bentoml, ./mlflow.db or ./mlruns."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "data" / "sample"
# The full set of real photos (3,086) beside the project; CI has it too.
FULL_DATA_DIR = Path(
    os.environ.get("CATSDOGS_FULL_DATA", ROOT.parent / "shared" / "datasets" / "catsdogs")
)

_STATE = Path(tempfile.mkdtemp(prefix="catsdogs-tests-"))
os.environ["BENTOML_HOME"] = str(_STATE / "bentoml")
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_STATE}/mlflow.db"
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session", autouse=True)
def isolated_state():
    """Run the session inside the temporary folder (MLflow puts artifacts in ./mlruns)."""
    previous = Path.cwd()
    os.chdir(_STATE)
    yield _STATE
    os.chdir(previous)
    shutil.rmtree(_STATE, ignore_errors=True)


@pytest.fixture(scope="session")
def trained_model():
    """A real model: fast mode on the committed sample of real photos, tracked and registered
    as `catsdogs` in the test session's MLflow and BentoML stores."""
    from training.config import TrainConfig
    from training.train import train

    return train(TrainConfig(data_dir=SAMPLE_DIR, mode="fast", experiment="tests"))


@pytest.fixture(scope="session")
def sample_images() -> list[Path]:
    return sorted(SAMPLE_DIR.glob("*/*.jpg"))


@dataclass
class Server:
    url: str
    log_path: Path
    monitoring_dir: Path
    model_tag: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def run_bentoml_serve(target: str, workdir: Path, model_tag: str, **env: str):
    """`bentoml serve TARGET` on a free loopback port; waits for /readyz; stops it by PID."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "server.log"
    monitoring_dir = workdir / "monitoring"
    # Every `bentoml serve` empties $BENTOML_HOME/prometheus_multiproc_dir when it starts, so
    # each server gets a home of its own that shares the session's model and Bento stores.
    home = workdir / "bentoml-home"
    home.mkdir(exist_ok=True)
    shared_home = Path(os.environ["BENTOML_HOME"])
    for store in ("models", "bentos"):
        (shared_home / store).mkdir(parents=True, exist_ok=True)
        if not (home / store).exists():
            (home / store).symlink_to(shared_home / store)
    environment = {
        **os.environ,
        "BENTOML_HOME": str(home),
        "CATSDOGS_MODEL_TAG": model_tag,
        "CATSDOGS_MONITORING_DIR": str(monitoring_dir),
        **env,
    }
    bentoml_cli = Path(sys.executable).parent / "bentoml"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(bentoml_cli), "serve", target, "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"bentoml serve exited early:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready in 240 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield Server(url, log_path, monitoring_dir, model_tag)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def server(trained_model, tmp_path_factory):
    """The project's service.py serving the session's trained model (2 HTTP workers, so the
    metrics tests see values from more than one process)."""
    with run_bentoml_serve(
        "service:CatsDogs",
        tmp_path_factory.mktemp("server"),
        trained_model.registered.bento_tag,
        CATSDOGS_WORKERS="2",
    ) as running:
        yield running


@contextlib.contextmanager
def serve_in_thread(handler: type):
    """A ThreadingHTTPServer on a free loopback port, running handler; yields its base URL."""
    import http.server
    import threading

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
