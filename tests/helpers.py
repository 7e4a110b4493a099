"""Helpers every test shares: where the photos are, the browser the page tests drive, free
ports, waiting for a condition, starting and stopping a server by its process group
(`bentoml serve` among them), and multipart bodies.

Import them as `from helpers import ...` (pytest puts tests/ on the path through conftest.py).
"""

import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "data" / "sample"
# Real photos with no cat or dog (data/nonpet/SOURCES.md): measured, never tuned on.
NONPET_DIR = ROOT / "data" / "nonpet"
MIN_NONPET_CAUGHT = 0.90  # the share of NONPET_DIR a default model must call "other"
# The full set of real photos (3,086) beside the project; CI has it too.
FULL_DATA_DIR = Path(
    os.environ.get("CATSDOGS_FULL_DATA", ROOT.parent / "shared" / "datasets" / "catsdogs")
)
LABELS = ("cat", "dog")
# The browser tests drive Debian's Chromium (.ci/run installs the package where it is missing).
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def photo_dir() -> Path:
    """The full set of real photos where present, else the committed sample."""
    return FULL_DATA_DIR if FULL_DATA_DIR.is_dir() else SAMPLE_DIR


def photos(label: str, root: Path = SAMPLE_DIR) -> list[Path]:
    """The JPEG photos of one label under root, in a stable order."""
    return sorted((root / label).glob("*.jpg"))


def labelled_photos(
    per_class: int, root: Path = SAMPLE_DIR, last: bool = False
) -> list[tuple[Path, str]]:
    """per_class photos of each label (the first ones, or the last with last=True)."""
    pick = slice(-per_class, None) if last else slice(per_class)
    return [(path, label) for label in LABELS for path in photos(label, root)[pick]]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(
    condition: Callable[[], object], timeout: float, what: str, interval: float = 0.5
) -> object:
    """Poll condition until it returns something truthy; fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:.0f} s")
        time.sleep(interval)


def wait_for_ready(
    url: str, timeout: float = 240, stopped: Callable[[], str | None] = lambda: None
) -> None:
    """Poll GET url until it answers 200. stopped() returns None while the thing waited for
    is alive, else what to fail with (its log, say)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        problem = stopped()
        if problem is not None:
            raise RuntimeError(f"stopped before {url} answered:\n{problem}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer 200 within {timeout:g} s")
        time.sleep(0.5)


def start_process_group(command: Sequence[str], log_path: Path, **popen) -> subprocess.Popen:
    """Start command in a process group of its own, output to log_path."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [str(part) for part in command],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **popen,
        )


def stop_process_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the whole group (servers fork workers), SIGKILL if it does not stop in time."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def process_group(command: Sequence[str], log_path: Path, **popen) -> Iterator[subprocess.Popen]:
    """start_process_group ... stop_process_group, also when the body fails."""
    process = start_process_group(command, log_path, **popen)
    try:
        yield process
    finally:
        stop_process_group(process)


def descendants(parent: int) -> dict[int, str]:
    """{pid: command line} of the live descendants of a process (Linux /proc)."""
    children: dict[int, list[int]] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
        commands[int(entry.name)] = command.replace(b"\0", b" ").decode(errors="replace")
    found, todo = {}, [parent]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = commands[child]
            todo.append(child)
    return found


def peak_memory_mib(pid: int) -> float:
    """The highest resident memory a process has had (VmHWM), in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    [kib] = [line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(kib) / 1024


def log_tail(path: Path, characters: int = 3000) -> str:
    return path.read_text(errors="replace")[-characters:] if path.exists() else "(no log)"


def multipart_body(
    files: Sequence[tuple[str, bytes]], field: str = "file", boundary: str | None = None
) -> tuple[bytes, str]:
    """A multipart/form-data body with one file part per (file name, bytes), encoded by
    httpx (with the given boundary, if any); returns the body and its Content-Type."""
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"} if boundary else {}
    request = httpx.Request(
        "POST",
        "http://localhost/",
        files=[(field, (name, data)) for name, data in files],
        headers=headers,
    )
    return request.read(), request.headers["content-type"]


@dataclass
class Server:
    url: str
    log_path: Path
    monitoring_dir: Path
    model_tag: str
    pid: int  # of `bentoml serve`, the leader of the server's process group

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request_logs(self) -> list[dict]:
        """The service's JSON request log lines so far."""
        prefix = '{"event": "request"'
        return [json.loads(line) for line in self.log().splitlines() if line.startswith(prefix)]

    def worker_pids(self) -> list[int]:
        """The serving worker processes (BentoML's supervisor starts and restarts them, each
        in a session of its own)."""
        return [
            pid
            for pid, command in descendants(self.pid).items()
            if "_bentoml_impl.worker.service" in command
        ]


def default_precision(model_tag: str) -> str:
    """What a server on default settings runs model_tag at: its int8 copy when training made
    one (the gate passed), else fp32. Read from the model's files, not from serving code."""
    import bentoml

    from catsdogs.config import INT8_ONNX_FILE_NAME

    model_dir = Path(bentoml.models.get(model_tag).path)
    return "int8" if (model_dir / INT8_ONNX_FILE_NAME).is_file() else "fp32"


@contextlib.contextmanager
def run_bentoml_serve(target: str, workdir: Path, model_tag: str, **env: str):
    """`bentoml serve TARGET` on a free loopback port; waits for /readyz; stops it by PID."""
    port = free_port()
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
    command = [bentoml_cli, "serve", target, "--host", "127.0.0.1", "--port", str(port)]
    with process_group(command, log_path, cwd=ROOT, env=environment) as process:
        url = f"http://127.0.0.1:{port}"
        wait_for_ready(
            f"{url}/readyz",
            stopped=lambda: None if process.poll() is None else log_tail(log_path),
        )
        yield Server(url, log_path, monitoring_dir, model_tag, process.pid)


@contextlib.contextmanager
def serve_in_thread(handler: type):
    """A ThreadingHTTPServer on a free loopback port, running handler; yields its base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
# Short think times so a few users make enough requests in a few seconds (extra options can
# override them: locust takes the last value given).
FAST_USERS = ["-u", "4", "-r", "4", "--wait-min", "0.1", "--wait-max", "0.5"]


def locust_command() -> list[str]:
    """Locust as a program: importing it would monkey-patch the test process with gevent."""
    beside_python = Path(sys.executable).parent / "locust"
    return [str(beside_python)] if beside_python.exists() else [sys.executable, "-m", "locust"]


def run_locust(
    host: str, reports: Path, run_time: str, *extra: str, photos: Path = SAMPLE_DIR
) -> subprocess.CompletedProcess:
    """One headless run with CSV and HTML reports under reports/; stdout and stderr together."""
    reports.mkdir(parents=True, exist_ok=True)
    command = [
        *locust_command(), "-f", str(LOCUSTFILE), "--headless", "--host", host, *FAST_USERS,
        "-t", run_time, "--photos", str(photos), "--csv", str(reports / "locust"),
        "--html", str(reports / "locust.html"), "--only-summary", *extra,
    ]  # fmt: skip
    return subprocess.run(
        command, cwd=reports, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=120,
    )  # fmt: skip


def run_smoke_test(url: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """scripts/smoke_test.py against url, as CI and CD run it (a subprocess)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "smoke_test.py"), url, *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )  # fmt: skip
