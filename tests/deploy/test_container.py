"""The Bento's container image: `bentoml containerize` builds it (the session's shared image,
tests/deploy/conftest.py), podman runs it, and it serves real photos as a non-root user,
without training code, data, secrets, mlflow or TensorFlow.

Runs with podman/buildah (no Docker daemon needed; CI installs them in .ci/run).
Measurements (image size, start-to-ready seconds, memory under a short load) are printed
(`pytest -s`) and written to container_metrics.json in the test's temporary folder.
"""

import json
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from helpers import SAMPLE_DIR, default_precision, free_port, run_smoke_test, wait_for_ready

from .conftest import PODMAN_MISSING
from .tools import run

pytestmark = pytest.mark.skipif(shutil.which("podman") is None, reason=PODMAN_MISSING)

READY_TIMEOUT = 300
LOAD_REQUESTS, LOAD_THREADS = 64, 16

# Sums VmRSS over every process in the container (except this probe itself), in kB.
RSS_PROBE = """
import json, os
me, out = os.getpid(), {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) == me:
        continue
    try:
        status = open(f"/proc/{pid}/status").read()
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode()
    except OSError:
        continue
    rss = [line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")]
    if rss:
        out[pid] = [int(rss[0]), cmd[:160].strip()]
print(json.dumps(out))
"""


@dataclass
class RunningImage:
    image: str
    container: str
    url: str
    bento_tag: str
    model_tag: str
    metrics: dict = field(default_factory=dict)


def _container_logs(container: str) -> str:
    logs = run("podman", "logs", container, check=False)
    return (logs.stdout + logs.stderr)[-3000:]


def _wait_ready(url: str, container: str) -> None:
    def exited() -> str | None:
        state = run("podman", "inspect", "--format", "{{.State.Running}}", container)
        return None if state.stdout.strip() == "true" else _container_logs(container)

    try:
        wait_for_ready(f"{url}/readyz", READY_TIMEOUT, exited)
    except RuntimeError as error:
        raise RuntimeError(f"{error}\n{_container_logs(container)}") from error


def _container_rss(container: str) -> dict[str, list]:
    result = run("podman", "exec", container, "python", "-c", RSS_PROBE, timeout=60)
    return json.loads(result.stdout)


def _cgroup_memory(container: str) -> int | None:
    """The container's cgroup memory use in bytes (podman stats), or None if unavailable."""
    result = run("podman", "stats", "--no-stream", "--format", "json", container, check=False)
    if result.returncode != 0:
        return None
    try:
        stats = json.loads(result.stdout)
        usage = stats[0]["mem_usage"].split("/")[0].strip()  # e.g. "812.3MB / 24.1GB"
        number, unit = re.fullmatch(r"([\d.]+)\s*([kKMGT]?i?B)", usage).groups()
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
    scale = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}
    scale |= {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
    return int(float(number) * scale.get(unit, 1))


@pytest.fixture(scope="module")
def running_image(service_image, tmp_path_factory) -> Iterator[RunningImage]:
    """`podman run ... serve` of the session's image, on a free loopback port."""
    workdir = tmp_path_factory.mktemp("container")
    image = service_image.image
    container = f"catsdogs-test-{uuid.uuid4().hex[:8]}"
    metrics: dict = dict(service_image.metrics)
    try:
        port = free_port()
        started = time.monotonic()
        run(
            "podman", "run", "-d", "--name", container,
            "-p", f"127.0.0.1:{port}:3000", image, "serve",
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, container)
        metrics["start_to_ready_seconds"] = round(time.monotonic() - started, 1)
        yield RunningImage(
            image, container, url, service_image.bento_tag, service_image.model_tag, metrics
        )
    finally:
        run("podman", "rm", "-f", "--time", "10", container, check=False, timeout=120)
        report = workdir / "container_metrics.json"
        report.write_text(json.dumps(metrics, indent=2))
        print(f"\ncontainer metrics ({report}):\n{json.dumps(metrics, indent=2)}")


def test_container_passes_the_smoke_test(running_image):
    result = run_smoke_test(running_image.url)
    assert result.returncode == 0, result.stdout + result.stderr
    health = httpx.get(f"{running_image.url}/health", timeout=30).json()
    assert health == {
        "status": "ok",
        "model": running_image.model_tag,
        "precision": default_precision(running_image.model_tag),
    }


def test_container_runs_as_a_non_root_user(running_image):
    uid = run("podman", "exec", running_image.container, "id", "-u").stdout.strip()
    assert uid != "0"
    user = run("podman", "image", "inspect", "--format", "{{.Config.User}}", running_image.image)
    assert user.stdout.strip() not in ("", "0", "root")


def test_image_holds_no_training_code_data_or_secrets(running_image):
    mount = Path(run("podman", "image", "mount", running_image.image).stdout.strip())
    try:
        bento = mount / "home" / "bentoml" / "bento"
        src = bento / "src"
        assert (src / "service.py").is_file(), sorted(p.name for p in bento.iterdir())
        sources = {p.relative_to(src).as_posix() for p in src.rglob("*")}
        for excluded in ("training", "tests", "data", "mlruns", ".venv", "notebooks"):
            assert excluded not in sources, excluded
        # uv's download cache under /root/.cache (kept when the builder has no cache mounts)
        # holds third-party sources, not the project's: measured, not searched.
        cache = mount / "root" / ".cache"
        cache_bytes = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
        running_image.metrics["build_cache_in_image_mb"] = round(cache_bytes / 2**20, 1)
        found = [
            p.relative_to(mount).as_posix()
            for root in (bento, mount / "root", mount / "home")
            for p in root.rglob("*")
            if not p.is_relative_to(cache)
            and (
                p.suffix in (".jpg", ".jpeg", ".db")
                or p.name in ("mlflow.db", ".env", ".netrc", "credentials", ".git-credentials")
                or p.name in ("mlruns", ".aws", ".ssh", ".git")
            )
        ]
        assert not found, found
    finally:
        run("podman", "image", "unmount", running_image.image, check=False)
    env = run("podman", "image", "inspect", "--format", "{{json .Config.Env}}", running_image.image)
    secret_names = [
        item.split("=", 1)[0]
        for item in json.loads(env.stdout)
        if re.search(r"SECRET|TOKEN|PASSWORD|API_KEY|ACCESS_KEY", item.split("=", 1)[0])
    ]
    assert not secret_names, secret_names


def test_image_python_has_no_training_packages(running_image):
    probe = (
        "import importlib.util as u, sys; print(sys.prefix); "
        "print([m for m in ('mlflow', 'sklearn', 'matplotlib', 'typer', 'training', "
        "'tensorflow', 'keras', 'tf2onnx') if u.find_spec(m)])"
    )
    result = run("podman", "exec", running_image.container, "python", "-c", probe)
    prefix, found = result.stdout.strip().splitlines()
    assert prefix == "/app/.venv"
    assert found == "[]", found


def test_container_memory_under_load(running_image):
    photos = sorted(SAMPLE_DIR.glob("*/*.jpg"))
    photos = (photos * (LOAD_REQUESTS // len(photos) + 1))[:LOAD_REQUESTS]
    metrics = running_image.metrics
    idle = _container_rss(running_image.container)
    metrics["rss_idle_mb"] = round(sum(v[0] for v in idle.values()) / 1024, 1)
    metrics["cgroup_memory_idle_mb"] = _mb(_cgroup_memory(running_image.container))

    peak = {"rss_kb": 0, "cgroup": 0, "processes": {}}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                rss = _container_rss(running_image.container)
            except (AssertionError, ValueError, subprocess.TimeoutExpired):
                continue
            total = sum(v[0] for v in rss.values())
            if total > peak["rss_kb"]:
                peak["rss_kb"], peak["processes"] = total, rss
            peak["cgroup"] = max(peak["cgroup"], _cgroup_memory(running_image.container) or 0)
            done.wait(0.5)

    def post(photo: Path) -> tuple[int, str, str]:
        response = httpx.post(
            f"{running_image.url}/predict",
            files={"file": (photo.name, photo.read_bytes())},
            timeout=120,
        )
        label = response.json().get("label", "") if response.status_code == 200 else ""
        return response.status_code, label, photo.parent.name

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(LOAD_THREADS) as pool:
            results = list(pool.map(post, photos))
    finally:
        elapsed = time.monotonic() - started
        done.set()
        sampler.join(timeout=90)
    final = _container_rss(running_image.container)
    final_kb = sum(v[0] for v in final.values())
    if final_kb > peak["rss_kb"]:
        peak["rss_kb"], peak["processes"] = final_kb, final

    metrics["load"] = f"{LOAD_REQUESTS} POST /predict from {LOAD_THREADS} threads"
    metrics["load_seconds"] = round(elapsed, 1)
    metrics["rss_peak_under_load_mb"] = round(peak["rss_kb"] / 1024, 1)
    metrics["cgroup_memory_peak_under_load_mb"] = _mb(peak["cgroup"] or None)
    metrics["rss_by_process_mb"] = [
        [round(kb / 1024, 1), cmd] for kb, cmd in sorted(peak["processes"].values(), reverse=True)
    ]
    statuses = [status for status, _, _ in results]
    assert statuses == [200] * LOAD_REQUESTS, statuses
    wrong = sum(label != truth for _, label, truth in results)
    metrics["load_misclassified"] = wrong
    assert wrong <= LOAD_REQUESTS // 4, results  # the fast sample model is not perfect


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)
