"""deploy/compose for real: `podman-compose up` of docker-compose.yml with the session's
service image, an MLflow server and Prometheus; then the service passes the smoke test, every
compose healthcheck passes inside its container, `catsdogs train` (from this virtual
environment) logs a run, its artifacts and a registered model to the MLflow server over HTTP,
and Prometheus scrapes the service and loads the alert rules. `podman-compose down -v` removes
the stack and its volumes at the end, whatever happened.

Images: where a registry is reachable (the upstream images can be pulled), the compose file's
own upstream images, Grafana included. Otherwise docker-compose.local-build.yml builds MLflow
(pip) and Prometheus (Debian's package) from deploy/mlflow/ and deploy/prometheus/ on the
service image's base, and Grafana, which has no such build, is left out (its provisioning is
checked statically by test_compose.py and its queries by test_monitoring.py).
The host ports are free loopback ports, set by a test-only override (`ports: !override`).
"""

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

import httpx
import pytest
import yaml

from helpers import ROOT, free_port, run_smoke_test, wait_for_ready

from .conftest import PODMAN_MISSING
from .tools import PODMAN_COMPOSE, podman_env, run

pytestmark = pytest.mark.skipif(shutil.which("podman") is None, reason=PODMAN_MISSING)

COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
LOCAL_BUILD = COMPOSE_DIR / "docker-compose.local-build.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
# What "ready" means for each service, and the upstream images that may be pulled.
READY_PATHS = {
    "catsdogs": "/readyz",
    "mlflow": "/health",
    "prometheus": "/-/ready",
    "grafana": "/api/health",
    "pushgateway": "/-/ready",
}
UPSTREAM = ("mlflow", "prometheus", "pushgateway", "grafana")
READY_TIMEOUT = 300
SCRAPE_TIMEOUT = 120  # prometheus.yml scrapes every 15 s


@dataclass
class Stack:
    project: str
    files: list[Path]
    env: dict[str, str]
    urls: dict[str, str]
    local_build: bool
    metrics: dict = field(default_factory=dict)

    def compose(self, *args: str, check: bool = True, timeout: float = 600):
        files = [part for path in self.files for part in ("-f", str(path))]
        return run(
            PODMAN_COMPOSE, "-p", self.project, *files, *args,
            env=self.env, check=check, timeout=timeout,
        )  # fmt: skip

    def containers(self) -> dict[str, dict]:
        """service -> `podman ps` record of its container (running or not)."""
        listing = run(
            "podman", "ps", "-a", "--format", "json",
            "--filter", f"label=io.podman.compose.project={self.project}",
        )  # fmt: skip
        return {c["Labels"]["com.docker.compose.service"]: c for c in json.loads(listing.stdout)}

    def container(self, service: str) -> str:
        return self.containers()[service]["Names"][0]


def _upstream_images_pulled(compose: dict) -> bool:
    """Pull the compose file's upstream images; False at the first that cannot be pulled
    (no registry: fails within seconds)."""
    for service in UPSTREAM:
        image = compose["services"][service]["image"]
        if run("podman", "pull", "-q", image, check=False, timeout=900).returncode != 0:
            return False
    return True


def _ports_override(path: Path, compose: dict, services: list[str]) -> dict[str, str]:
    """A compose override publishing each service's container port on a free loopback port
    (instead of the file's fixed ports on every interface); returns service -> base URL."""
    lines, urls = ["services:"], {}
    for service in services:
        [published] = compose["services"][service]["ports"]
        target = str(published).split(":")[-1]
        port = free_port()
        lines += [f"  {service}:", f'    ports: !override ["127.0.0.1:{port}:{target}"]']
        urls[service] = f"http://127.0.0.1:{port}"
    path.write_text("\n".join(lines) + "\n")
    return urls


TRAINING_CONTAINERFILE = ROOT / "deploy" / "training" / "Containerfile"


@pytest.fixture(scope="module")
def training_image() -> Iterator[tuple[str, dict]]:
    """deploy/training/Containerfile built from the repository root (what ci.yml pushes as
    the -train image): the drift-job service's image."""
    image = f"localhost/catsdogs-train-test:{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    run("podman", "build", "--isolation", "chroot", "-f", TRAINING_CONTAINERFILE, "-t", image,
        ROOT, timeout=2400)  # fmt: skip
    size = run("podman", "image", "inspect", "--format", "{{.Size}}", image)
    metrics = {"training_image_build_seconds": round(time.monotonic() - started, 1),
               "training_image_size_bytes": int(size.stdout.strip())}  # fmt: skip
    try:
        yield image, metrics
    finally:
        run("podman", "rmi", "-f", image, check=False, timeout=300)


@pytest.fixture(scope="module")
def stack(service_image, training_image, tmp_path_factory) -> Iterator[Stack]:
    assert PODMAN_COMPOSE.exists(), "podman-compose not installed: install the dev extra"
    workdir = tmp_path_factory.mktemp("compose")
    compose = yaml.safe_load(COMPOSE.read_text())
    local_build = not _upstream_images_pulled(compose)
    services = ["catsdogs", "mlflow", "prometheus", "pushgateway"]
    services += [] if local_build else ["grafana"]
    override = workdir / "ports.override.yml"
    urls = _ports_override(override, compose, services)
    stack = Stack(
        project=f"catsdogs-test-{uuid.uuid4().hex[:8]}",
        files=[COMPOSE, *([LOCAL_BUILD] if local_build else []), override],
        env=podman_env(CATSDOGS_IMAGE=service_image.image, CATSDOGS_TRAIN_IMAGE=training_image[0]),
        urls=urls,
        local_build=local_build,
        metrics={"images": "local build" if local_build else "upstream", **training_image[1]},
    )
    built = []
    try:
        if local_build:
            started = time.monotonic()
            stack.compose("build", "mlflow", "prometheus", timeout=1800)
            stack.metrics["local_build_seconds"] = round(time.monotonic() - started, 1)
            for service, spec in yaml.safe_load(LOCAL_BUILD.read_text())["services"].items():
                built.append(spec["image"])
                size = run("podman", "image", "inspect", "--format", "{{.Size}}", spec["image"])
                stack.metrics[f"{service}_image_size_bytes"] = int(size.stdout.strip())

        started = time.monotonic()
        # The drift job too (no port: it runs once at start, then hourly).
        stack.compose("up", "-d", *services, "drift-job")
        for service in services:

            def stopped(service: str = service) -> str | None:
                record = stack.containers().get(service)
                if record and record["State"] == "running":
                    return None
                logs = run("podman", "logs", stack.container(service), check=False)
                return f"{service} is not running:\n{(logs.stdout + logs.stderr)[-3000:]}"

            wait_for_ready(f"{urls[service]}{READY_PATHS[service]}", READY_TIMEOUT, stopped)
        stack.metrics["up_to_ready_seconds"] = round(time.monotonic() - started, 1)
        yield stack
    finally:
        started = time.monotonic()
        down = stack.compose("down", "-v", check=False, timeout=600)
        stack.metrics["down_seconds"] = round(time.monotonic() - started, 1)
        label = f"label=io.podman.compose.project={stack.project}"
        left = run("podman", "ps", "-aq", "--filter", label, check=False).stdout.split()
        left += run("podman", "volume", "ls", "-q", "--filter", label, check=False).stdout.split()
        for name in left:  # whatever `down` could not remove
            run("podman", "rm", "-f", name, check=False)
            run("podman", "volume", "rm", "-f", name, check=False)
        for image in built:
            run("podman", "rmi", "-f", image, check=False, timeout=300)
        print(f"\ncompose stack metrics: {json.dumps(stack.metrics)}")
        assert down.returncode == 0, down.stdout + down.stderr
        assert not left, f"podman-compose down left {left}"


def test_stack_service_passes_the_smoke_test(stack):
    result = run_smoke_test(stack.urls["catsdogs"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_healthchecks_pass_inside_the_containers(stack):
    """podman runs healthchecks from systemd timers, which this machine lacks: run each
    service's compose healthcheck once by hand (its command must exist in the image)."""
    for service in stack.urls:
        result = run("podman", "healthcheck", "run", stack.container(service), check=False)
        assert result.returncode == 0, (service, result.stdout, result.stderr)


def _mlflow(stack: Stack, endpoint: str, **params: str) -> dict:
    response = httpx.get(
        f"{stack.urls['mlflow']}/api/2.0/mlflow/{endpoint}", params=params, timeout=30
    )
    assert response.status_code == 200, (endpoint, response.text)
    return response.json()


def test_training_logs_a_run_to_the_mlflow_server(stack, tmp_path):
    """`catsdogs train` on the embedded sample, tracking to the server over HTTP (through
    --allowed-hosts), with artifacts uploaded through it (--serve-artifacts)."""
    env = {
        **podman_env(),
        "MLFLOW_TRACKING_URI": stack.urls["mlflow"],
        # A BentoML store of its own: the session's `catsdogs:latest` stays the session's model.
        "BENTOML_HOME": str(tmp_path / "bentoml"),
    }
    catsdogs = Path(sys.executable).parent / "catsdogs"
    started = time.monotonic()
    result = subprocess.run(
        [str(catsdogs), "train"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    stack.metrics["train_seconds"] = round(time.monotonic() - started, 1)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    match = re.search(r"MLflow:\s+run (\w+), model models:/catsdogs/(\d+)", result.stdout)
    assert match, result.stdout[-3000:]
    run_id, version = match.groups()

    run_info = _mlflow(stack, "runs/get", run_id=run_id)["run"]
    assert run_info["info"]["status"] == "FINISHED"
    assert run_info["info"]["artifact_uri"].startswith("mlflow-artifacts:/")
    metrics = {m["key"]: m["value"] for m in run_info["data"]["metrics"]}
    assert 0.5 <= metrics["test_accuracy"] <= 1.0
    params = {p["key"]: p["value"] for p in run_info["data"]["params"]}
    assert params["mode"] == "fast"
    tags = {t["key"]: t["value"] for t in run_info["data"]["tags"]}
    assert tags["bentoml_model_tag"].startswith("catsdogs:")

    files = {f["path"] for f in _mlflow(stack, "artifacts/list", run_id=run_id)["files"]}
    assert {"config.json", "onnx"} <= files, files
    onnx = _mlflow(stack, "artifacts/list", run_id=run_id, path="onnx")["files"]
    assert [(f["path"], f["file_size"] > 0) for f in onnx] == [("onnx/model.onnx", True)]
    champion = _mlflow(stack, "registered-models/alias", name="catsdogs", alias="champion")
    assert (champion["model_version"]["version"], champion["model_version"]["run_id"]) == (
        version, run_id
    )  # fmt: skip
    # Stored by the server on its artifact volume, nothing on the client.
    stored = run("podman", "exec", stack.container("mlflow"), "find", "/mlflow/artifacts")
    assert f"/{run_id}/artifacts/onnx/model.onnx" in stored.stdout
    assert not (tmp_path / "mlruns").exists()


def _query(stack: Stack, query: str) -> list[dict]:
    response = httpx.get(
        f"{stack.urls['prometheus']}/api/v1/query", params={"query": query}, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]["result"]


def _predict(stack: Stack, sample: str) -> None:
    photo = ROOT / "data" / "sample" / sample
    response = httpx.post(
        f"{stack.urls['catsdogs']}/predict",
        files={"file": (photo.name, photo.read_bytes())},
        timeout=60,
    )
    assert response.status_code == 200, response.text


def test_prometheus_scrapes_the_service(stack):
    _predict(stack, "dog/dog.1.jpg")
    wanted = [
        'catsdogs_predictions_total{job="catsdogs"}',
        'bentoml_service_request_total{job="catsdogs"}',
    ]
    deadline = time.monotonic() + SCRAPE_TIMEOUT
    while True:
        targets = httpx.get(f"{stack.urls['prometheus']}/api/v1/targets", timeout=30).json()
        [target] = [t for t in targets["data"]["activeTargets"] if t["labels"]["job"] == "catsdogs"]
        results = {query: _query(stack, query) for query in wanted}
        if target["health"] == "up" and all(results.values()):
            break
        assert time.monotonic() < deadline, (target, results)
        time.sleep(2)
    assert target["scrapeUrl"] == "http://catsdogs:3000/metrics"  # the compose service name
    assert {row["metric"]["label"] for row in results[wanted[0]]} >= {"dog"}


def test_a_drift_run_reaches_prometheus_through_the_pushgateway(stack, tmp_path):
    """The drift job's path, on the service's own records: copied out of the running
    container, compared by `catsdogs drift` with the served model's reference, its gauges
    pushed to the stack's Pushgateway and scraped from there by Prometheus (the drift-job
    service does the same on a schedule: the test after this one)."""
    _predict(stack, "cat/cat.102.jpg")
    records = tmp_path / "monitoring"
    source = f"{stack.container('catsdogs')}:/var/lib/catsdogs/monitoring"
    deadline = time.monotonic() + 60
    while not list(records.rglob("*.log*")):  # bentoml.monitor writes in the background
        assert time.monotonic() < deadline, "the service wrote no prediction records"
        time.sleep(2)
        shutil.rmtree(records, ignore_errors=True)
        run("podman", "cp", source, str(records))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "catsdogs"), "drift", str(records), "--out",
         str(tmp_path / "report"), "--pushgateway", stack.urls["pushgateway"],
         "--min-records", "2", "--no-embedding-view"],
        capture_output=True, text=True, timeout=600, env=stack.env,
    )  # fmt: skip
    # 0: no drift found (or too few records to tell), 3: drift found; both are a run.
    assert result.returncode in (0, 3), result.stdout + result.stderr
    query = 'catsdogs_drift_last_run_timestamp_seconds{job="catsdogs-drift"}'
    deadline = time.monotonic() + SCRAPE_TIMEOUT
    while not (rows := _query(stack, query)):
        assert time.monotonic() < deadline, f"Prometheus has no {query}"
        time.sleep(2)
    assert abs(float(rows[0]["value"][1]) - time.time()) < SCRAPE_TIMEOUT + 600


def test_the_drift_job_service_runs_the_job_on_the_service_records(stack):
    """The drift-job service, on the training image, against the shared monitoring volume:
    its first run (at start) writes the summary and the gauges file (what its healthcheck
    reads), pushes to the Pushgateway and logs its exit code, 0 or 3 (1: the job failed)."""
    container = stack.container("drift-job")
    deadline = time.monotonic() + 300
    while "catsdogs drift exited with" not in (logs := _logs(container)):
        assert stack.containers()["drift-job"]["State"] == "running", logs
        assert time.monotonic() < deadline, f"no run finished:\n{logs}"
        time.sleep(3)
    assert re.search(r"catsdogs drift exited with [03]\b", logs), logs
    summary = run("podman", "exec", container, "cat", "/var/lib/catsdogs/drift/latest/summary.json")
    assert "models" in json.loads(summary.stdout), summary.stdout
    gauges = run("podman", "exec", container, "cat", "/var/lib/catsdogs/drift/drift.prom")
    assert "catsdogs_drift_last_run_timestamp_seconds" in gauges.stdout
    pushed = httpx.get(f"{stack.urls['pushgateway']}/metrics", timeout=30).text
    assert 'catsdogs_drift_last_run_timestamp_seconds{instance="",job="catsdogs-drift"}' in pushed
    # Its compose healthcheck (a fresh gauges file) passes now that a run has finished.
    health = run("podman", "healthcheck", "run", container, check=False)
    assert health.returncode == 0, (health.stdout, health.stderr)


def _logs(container: str) -> str:
    logs = run("podman", "logs", container, check=False)
    return logs.stdout + logs.stderr


def test_prometheus_loads_the_alert_rules(stack):
    expected = {
        rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
    }  # fmt: skip
    groups = httpx.get(f"{stack.urls['prometheus']}/api/v1/rules", timeout=30).json()
    rules = [rule for group in groups["data"]["groups"] for rule in group["rules"]]
    assert {rule["name"] for rule in rules} == expected
    assert all(rule["health"] != "err" for rule in rules), rules


def test_grafana_provisions_the_datasource_and_dashboard(stack):
    if stack.local_build:
        pytest.skip("no registry: the Grafana image cannot be pulled and has no local build")
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/catsdogs.json").read_text())
    auth = ("admin", "admin")  # GRAFANA_ADMIN_PASSWORD's default in the compose file
    base = stack.urls["grafana"]
    found = httpx.get(f"{base}/api/dashboards/uid/{dashboard['uid']}", auth=auth, timeout=30)
    assert found.status_code == 200, found.text
    source = httpx.get(f"{base}/api/datasources/uid/prometheus", auth=auth, timeout=30)
    assert source.status_code == 200, source.text
    assert source.json()["url"] == "http://prometheus:9090"
