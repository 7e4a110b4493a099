"""The compose stack in deploy/compose/, checked as data (no Docker daemon needed): its
services, ports, named volumes for every store, healthchecks, wiring between services (the
drift job included) and every mounted file; the overrides for machines without a registry
(local builds) and for API keys. `compose_problems` is the checker; the last tests prove it
catches broken copies. tests/deploy/test_compose_stack.py runs the stack for real."""

import copy
import fnmatch
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from helpers import ROOT

from .tools import PODMAN_COMPOSE

COMPOSE = ROOT / "deploy" / "compose" / "docker-compose.yml"
LOCAL_BUILD = COMPOSE.parent / "docker-compose.local-build.yml"
API_KEYS = COMPOSE.parent / "docker-compose.api-keys.yml"
# Where Kubernetes mounts the key file too (deploy/k8s/README.md).
API_KEYS_FILE = "/run/secrets/catsdogs/api_keys"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"

SERVICES = {
    "catsdogs", "mlflow", "prometheus", "grafana", "pushgateway", "drift-job", "volumes-init"
}  # fmt: skip
# Host port -> container port of each service.
PORTS = {
    "catsdogs": ("3000", "3000"),
    "mlflow": ("5000", "5000"),
    "prometheus": ("9090", "9090"),
    "grafana": ("3001", "3000"),
    "pushgateway": ("9091", "9091"),
}
# Stores that must outlive `docker compose down`: (service, path inside the container).
PERSISTENT = [
    ("mlflow", "backend store"),
    ("mlflow", "artifact store"),
    ("prometheus", "/prometheus"),
    ("grafana", "/var/lib/grafana"),
    ("catsdogs", "prediction records"),
    ("pushgateway", "/pushgateway"),
]
# The service's user in the Bento image (`bentoml`).
BENTO_UID = "1034"


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _ports(service: dict) -> list[tuple[str, str]]:
    pairs = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):  # long syntax
            pairs.append((str(entry.get("published")), str(entry.get("target"))))
        else:
            parts = str(entry).split("/")[0].split(":")
            pairs.append((parts[-2], parts[-1]) if len(parts) >= 2 else (parts[0], parts[0]))
    return pairs


def _mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) of every volume entry; a named volume's source has no slash."""
    mounts = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            mounts.append((str(entry.get("source", "")), str(entry["target"])))
        else:
            source, target = str(entry).split(":")[:2]
            mounts.append((source, target))
    return mounts


def _is_named(source: str) -> bool:
    return bool(source) and not source.startswith((".", "/", "~")) and "/" not in source


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in (env or {}).items()}


def _command(service: dict) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def _option(command: list[str], name: str) -> str | None:
    """Value of `--name=value` or `--name value` in a command line."""
    for i, part in enumerate(command):
        if part.startswith(f"{name}="):
            return part.split("=", 1)[1]
        if part == name and i + 1 < len(command):
            return command[i + 1]
    return None


def _container_path_of(uri: str) -> str:
    """Folder inside the container holding a store URI (sqlite:////a/b.db -> /a)."""
    if uri.startswith("sqlite:///"):
        return str(Path(uri.removeprefix("sqlite:///")).parent)
    return urlparse(uri).path if "://" in uri else uri


def _on_named_volume(service: dict, container_path: str, declared: set[str]) -> str | None:
    """The declared named volume mounted at or above container_path, if any."""
    for source, target in _mounts(service):
        if (
            _is_named(source)
            and source in declared
            and (container_path == target or container_path.startswith(target.rstrip("/") + "/"))
        ):
            return source
    return None


def compose_problems(compose_path: Path, prometheus_path: Path = PROMETHEUS_CONFIG) -> list[str]:
    """Everything wrong with a compose file (and the Prometheus config it mounts)."""
    problems: list[str] = []
    compose = _load(compose_path)
    services = compose.get("services") or {}
    declared = set((compose.get("volumes") or {}).keys())

    missing = SERVICES - services.keys()
    if missing:
        problems.append(f"missing services: {sorted(missing)}")

    for name, service in services.items():
        test = (service.get("healthcheck") or {}).get("test")
        one_shot = str(service.get("restart")) == "no"  # runs once; others wait for it to end
        if not one_shot and (not test or (service.get("healthcheck") or {}).get("disable")):
            problems.append(f"{name}: no healthcheck")
        if name in PORTS and PORTS[name] not in _ports(service):
            problems.append(f"{name}: port {':'.join(PORTS[name])} not published")
        if name in SERVICES and not service.get("restart"):
            problems.append(f"{name}: no restart policy")
        for source, target in _mounts(service):
            if _is_named(source):
                if source not in declared:
                    problems.append(f"{name}: volume {source} is not declared")
            elif not (compose_path.parent / source).resolve().exists():
                problems.append(f"{name}: mounted {source} (-> {target}) does not exist")

    used = {
        source
        for service in services.values()
        for source, _ in _mounts(service)
        if _is_named(source)
    }
    for unused in sorted(declared - used):
        problems.append(f"volume {unused} is declared but never mounted")

    # Each healthcheck probes the endpoint that means "ready".
    health_paths = {
        "catsdogs": "/readyz",
        "mlflow": "/health",
        "prometheus": "/-/healthy",
        "grafana": "/api/health",
        "pushgateway": "/-/healthy",
    }
    for name, path in health_paths.items():
        test = (services.get(name, {}).get("healthcheck") or {}).get("test") or []
        joined = " ".join(test) if isinstance(test, list) else str(test)
        if test and path not in joined:
            problems.append(f"{name}: healthcheck does not probe {path}")

    # Every store on a named volume of its own.
    mlflow = services.get("mlflow", {})
    command = _command(mlflow)
    backend = _option(command, "--backend-store-uri")
    artifacts = _option(command, "--artifacts-destination")
    if backend is None or not backend.startswith(("sqlite:", "postgresql")):
        problems.append("mlflow: no --backend-store-uri (sqlite or postgresql)")
    elif backend.startswith("sqlite:") and not _on_named_volume(
        mlflow, _container_path_of(backend), declared
    ):
        problems.append(f"mlflow: backend store {backend} is not on a named volume")
    elif backend.startswith("postgresql"):
        postgres = services.get(urlparse(backend).hostname or "", {})
        if not any(_is_named(s) and s in declared for s, _ in _mounts(postgres)):
            problems.append("mlflow: the postgres backend has no named volume")
    if "--serve-artifacts" not in command:
        problems.append("mlflow: artifacts are not served (--serve-artifacts)")
    if artifacts is None:
        problems.append("mlflow: no --artifacts-destination")
    elif not _on_named_volume(mlflow, _container_path_of(artifacts), declared):
        problems.append(f"mlflow: artifact store {artifacts} is not on a named volume")
    elif backend and _on_named_volume(mlflow, _container_path_of(backend), declared) == (
        _on_named_volume(mlflow, _container_path_of(artifacts), declared)
    ):
        problems.append("mlflow: backend and artifact stores share one volume")

    for name, path in (("prometheus", "/prometheus"), ("grafana", "/var/lib/grafana")):
        if not _on_named_volume(services.get(name, {}), path, declared):
            problems.append(f"{name}: {path} is not on a named volume")

    # catsdogs -> mlflow: the tracking URI names the mlflow service and its port, and
    # MLflow accepts that Host header.
    catsdogs = services.get("catsdogs", {})
    uri = _environment(catsdogs).get("MLFLOW_TRACKING_URI", "")
    parsed = urlparse(uri)
    if parsed.hostname != "mlflow" or parsed.port != 5000:
        problems.append(f"catsdogs: MLFLOW_TRACKING_URI {uri!r} is not http://mlflow:5000")
    allowed = (_option(command, "--allowed-hosts") or "").split(",")
    # MLflow's own matching: exact, or fnmatch where the entry has a "*".
    if parsed.netloc and not any(
        fnmatch.fnmatch(parsed.netloc, entry) if "*" in entry else parsed.netloc == entry
        for entry in allowed
    ):
        problems.append(f"mlflow: --allowed-hosts does not allow {parsed.netloc}")
    if _command(catsdogs) != ["serve"]:
        problems.append("catsdogs: command is not `serve`")
    if "CATSDOGS_IMAGE" not in str(catsdogs.get("image", "")):
        problems.append("catsdogs: image is not taken from ${CATSDOGS_IMAGE}")

    # Prometheus scrapes the service by its compose name and container port.
    targets = [
        target
        for job in (_load(prometheus_path).get("scrape_configs") or [])
        for static in job.get("static_configs") or []
        for target in static.get("targets") or []
    ]
    if f"catsdogs:{PORTS['catsdogs'][1]}" not in targets:
        problems.append(f"prometheus.yml does not scrape catsdogs:3000 (targets {targets})")
    problems += _drift_problems(services, declared, _load(prometheus_path))
    return problems


def _drift_problems(services: dict, declared: set[str], prometheus: dict) -> list[str]:
    """The drift job reads the service's records from their volume, read-only; the volume is
    made writable for the service's non-root user before it starts; the job pushes to the
    Pushgateway, which Prometheus scrapes keeping the pushed labels, and keeps its gauges
    on a volume."""
    problems = []
    catsdogs, job = services.get("catsdogs", {}), services.get("drift-job", {})
    init = services.get("volumes-init", {})
    records_dir = _environment(catsdogs).get("CATSDOGS_MONITORING_DIR", "")
    volume = _on_named_volume(catsdogs, records_dir, declared) if records_dir else None
    if volume is None:
        problems.append("catsdogs: CATSDOGS_MONITORING_DIR is not on a named volume")
        return problems
    job_mounts = [entry for entry in job.get("volumes", []) if str(entry).startswith(volume)]
    if not job_mounts:
        problems.append(f"drift-job: does not mount the records volume {volume}")
    elif not all(str(entry).endswith(":ro") for entry in job_mounts):
        problems.append(f"drift-job: mounts the records volume {volume} writable")
    else:
        job_path = str(job_mounts[0]).split(":")[1]
        command = " ".join(_command(job))
        if f"catsdogs drift {job_path}" not in command:
            problems.append(f"drift-job: does not run `catsdogs drift {job_path}`")
        if "--pushgateway http://pushgateway:9091" not in command:
            problems.append("drift-job: does not push to http://pushgateway:9091")
    init_command = " ".join(_command(init))
    init_paths = {target for source, target in _mounts(init) if source == volume}
    if str(init.get("user", "")).split(":")[0] != "0" or not any(
        f"chown {BENTO_UID}:{BENTO_UID} {path}" in init_command for path in init_paths
    ):
        problems.append(f"volumes-init: does not give {volume} to uid {BENTO_UID} as root")
    waits_for = catsdogs.get("depends_on") or {}
    condition = (waits_for.get("volumes-init") or {}) if isinstance(waits_for, dict) else {}
    if condition.get("condition") != "service_completed_successfully":
        problems.append("catsdogs: does not wait for volumes-init to complete")
    if not _on_named_volume(services.get("pushgateway", {}), "/pushgateway", declared):
        problems.append("pushgateway: /pushgateway is not on a named volume")
    scrapes = [
        job for job in prometheus.get("scrape_configs") or []
        for static in job.get("static_configs") or []
        if "pushgateway:9091" in (static.get("targets") or [])
    ]  # fmt: skip
    if not scrapes or not all(job.get("honor_labels") for job in scrapes):
        problems.append("prometheus.yml does not scrape pushgateway:9091 with honor_labels")
    return problems


def test_compose_file_is_complete():
    assert compose_problems(COMPOSE) == []


def test_compose_runs_the_upstream_images():
    """docker-compose.yml names the upstream images, fully qualified (no short-name lookup),
    and builds nothing: local builds are docker-compose.local-build.yml's business."""
    services = _load(COMPOSE)["services"]
    ours = {"catsdogs", "volumes-init", "drift-job"}  # the project's own images
    assert {name: s["image"] for name, s in services.items() if name not in ours} == {
        "mlflow": "ghcr.io/mlflow/mlflow:v3.17.2",
        "prometheus": "docker.io/prom/prometheus:v3.5.0",
        "grafana": "docker.io/grafana/grafana:12.1.1",
        "pushgateway": "docker.io/prom/pushgateway:v1.11.0",
    }
    assert not [name for name, service in services.items() if "build" in service]
    # The host reaches MLflow on whatever port it publishes (the test uses free ports).
    allowed = _option(_command(services["mlflow"]), "--allowed-hosts").split(",")
    assert {"localhost:*", "127.0.0.1:*"} <= set(allowed)


def test_local_build_override_builds_mlflow_and_prometheus_on_the_service_base():
    override = _load(LOCAL_BUILD)["services"]
    assert set(override) == {"mlflow", "prometheus", "pushgateway"}
    mlflow_pin = re.search(r'"mlflow==([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    for service in override.values():
        # A local name, never the upstream one, and never pulled.
        assert service["image"].startswith("localhost/"), service
        assert service["pull_policy"] == "never", service
    # The Pushgateway runs the Prometheus image's second binary (nothing more to build).
    pushgateway = override.pop("pushgateway")
    assert "build" not in pushgateway and pushgateway["image"] == override["prometheus"]["image"]
    assert pushgateway["entrypoint"] == ["/usr/bin/prometheus-pushgateway"]
    for name, service in override.items():
        containerfile = (
            COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]
        )
        text = containerfile.read_text()
        # The base of the Bento's image (python:3.11-slim, or scripts/offline_base_image.sh's
        # stand-in for it).
        assert re.search(r"^FROM docker\.io/library/python:3\.11-slim$", text, re.M), name
        assert re.search(r"^USER (?!root)\w+$", text, re.M), f"{name} runs as root"
    mlflow = (COMPOSE.parent / "../mlflow/Containerfile").read_text()
    assert f"ARG MLFLOW_VERSION={mlflow_pin}" in mlflow
    assert override["mlflow"]["image"].endswith(f":{mlflow_pin}")
    # The compose file's `command:` gives Prometheus flags only, as for the upstream image.
    prometheus = (COMPOSE.parent / "../prometheus/Containerfile").read_text()
    assert 'ENTRYPOINT ["/usr/bin/prometheus"]' in prometheus
    # The healthcheck's probe exists in the image.
    assert "wget" in _load(COMPOSE)["services"]["prometheus"]["healthcheck"]["test"]
    assert re.search(r"apt-get install [^&]*\bprometheus-pushgateway\b[^&]*\bwget\b", prometheus)


def test_api_keys_override_mounts_a_secret_and_sets_the_key_file():
    """Keys are off in docker-compose.yml; the override turns them on with a secret read from
    a host file that must be named (no default), mounted where Kubernetes mounts it."""
    base = _load(COMPOSE)
    assert "secrets" not in base
    assert "CATSDOGS_API_KEYS_FILE" not in _environment(base["services"]["catsdogs"])
    override = _load(API_KEYS)
    [secret] = override["services"]["catsdogs"]["secrets"]
    assert secret["target"] == API_KEYS_FILE
    assert _environment(override["services"]["catsdogs"])["CATSDOGS_API_KEYS_FILE"] == (
        API_KEYS_FILE
    )
    source = override["secrets"][secret["source"]]["file"]
    assert re.fullmatch(r"\$\{CATSDOGS_API_KEYS_HOST_FILE:\?[^}]+\}", source), source
    assert API_KEYS_FILE in (ROOT / "deploy" / "k8s" / "configmap.yaml").read_text()


@pytest.mark.skipif(shutil.which("podman") is None, reason="podman-compose needs podman")
def test_podman_compose_merges_the_api_keys_override(tmp_path):
    keys = tmp_path / "api_keys"
    keys.write_text("sha256:" + "0" * 64 + "\n")

    def config(**env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(PODMAN_COMPOSE), "-f", str(COMPOSE), "-f", str(API_KEYS), "config"],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
            env={**os.environ, **env},
        )  # fmt: skip

    missing = config(CATSDOGS_API_KEYS_HOST_FILE="")
    assert missing.returncode != 0
    assert "CATSDOGS_API_KEYS_HOST_FILE" in missing.stdout + missing.stderr
    merged = config(CATSDOGS_API_KEYS_HOST_FILE=str(keys))
    assert merged.returncode == 0, merged.stderr
    compose = yaml.safe_load(merged.stdout)
    assert compose["secrets"]["catsdogs_api_keys"]["file"] == str(keys)
    catsdogs = compose["services"]["catsdogs"]
    assert catsdogs["secrets"] == [{"source": "catsdogs_api_keys", "target": API_KEYS_FILE}]
    assert catsdogs["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"  # merged


def test_compose_declares_its_services_and_their_ports():
    services = _load(COMPOSE)["services"]
    assert set(services) == SERVICES
    for name, pair in PORTS.items():
        assert pair in _ports(services[name]), name


def test_every_store_is_a_named_volume():
    compose = _load(COMPOSE)
    declared = set(compose["volumes"])
    services = compose["services"]
    command = _command(services["mlflow"])
    backend = _container_path_of(_option(command, "--backend-store-uri"))
    artifacts = _container_path_of(_option(command, "--artifacts-destination"))
    volumes = {
        "mlflow backend": _on_named_volume(services["mlflow"], backend, declared),
        "mlflow artifacts": _on_named_volume(services["mlflow"], artifacts, declared),
        "prometheus": _on_named_volume(services["prometheus"], "/prometheus", declared),
        "grafana": _on_named_volume(services["grafana"], "/var/lib/grafana", declared),
    }
    assert all(volumes.values()), volumes
    assert len(set(volumes.values())) == 4, volumes
    records = _environment(services["catsdogs"])["CATSDOGS_MONITORING_DIR"]
    assert _on_named_volume(services["catsdogs"], records, declared) == "catsdogs-monitoring"
    assert _on_named_volume(services["pushgateway"], "/pushgateway", declared)
    assert "--persistence.file=/pushgateway/metrics" in _command(services["pushgateway"])


def test_mounted_config_files_exist_and_are_the_projects():
    services = _load(COMPOSE)["services"]
    files = {
        (COMPOSE.parent / source).resolve()
        for service in services.values()
        for source, _ in _mounts(service)
        if not _is_named(source)
    }
    assert files == {
        ROOT / "deploy" / "prometheus" / "prometheus.yml",
        ROOT / "deploy" / "prometheus" / "alerts.yml",
        ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml",
        ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "dashboards.yml",
        ROOT / "deploy" / "grafana" / "dashboards" / "catsdogs.json",
    }
    assert all(path.is_file() for path in files)


def test_grafana_provisioning_matches_the_mounts_and_the_dashboard():
    services = _load(COMPOSE)["services"]
    grafana_mounts = dict(_mounts(services["grafana"]))
    datasource = _load(ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml")
    (source,) = datasource["datasources"]
    assert urlparse(source["url"]).hostname == "prometheus"
    assert str(urlparse(source["url"]).port) == PORTS["prometheus"][1]
    provider = _load(ROOT / "deploy/grafana/provisioning/dashboards/dashboards.yml")
    (folder,) = [p["options"]["path"] for p in provider["providers"]]
    dashboard_target = grafana_mounts["../grafana/dashboards/catsdogs.json"]
    assert Path(dashboard_target).parent == Path(folder)
    dashboard = (ROOT / "deploy/grafana/dashboards/catsdogs.json").read_text()
    assert f'"uid": "{source["uid"]}"' in dashboard


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda c: c["services"]["catsdogs"].pop("healthcheck"), "catsdogs: no healthcheck"),
        (lambda c: c["services"].pop("grafana"), "missing services"),
        (lambda c: c["services"]["grafana"].update(ports=["3000:3000"]), "grafana: port"),
        (lambda c: c.pop("volumes"), "is not declared"),
        (
            lambda c: c["services"]["prometheus"]["volumes"].remove("prometheus-data:/prometheus"),
            "prometheus: /prometheus is not on a named volume",
        ),
        (
            lambda c: c["services"]["mlflow"]["volumes"].remove(
                "mlflow-artifacts:/mlflow/artifacts"
            ),
            "mlflow: artifact store",
        ),
        (
            lambda c: c["services"]["catsdogs"]["environment"].update(
                MLFLOW_TRACKING_URI="http://localhost:5000"
            ),
            "MLFLOW_TRACKING_URI",
        ),
        (
            lambda c: c["services"]["prometheus"]["volumes"].append(
                "../prometheus/missing.yml:/etc/prometheus/missing.yml:ro"
            ),
            "does not exist",
        ),
        (
            lambda c: c["services"]["mlflow"]["healthcheck"].update(test=["CMD", "true"]),
            "mlflow: healthcheck does not probe /health",
        ),
        (
            lambda c: c["services"]["catsdogs"]["environment"].pop("CATSDOGS_MONITORING_DIR"),
            "CATSDOGS_MONITORING_DIR is not on a named volume",
        ),
        (
            lambda c: c["services"]["drift-job"].update(
                volumes=[v.replace(":ro", "") for v in c["services"]["drift-job"]["volumes"]]
            ),
            "mounts the records volume catsdogs-monitoring writable",
        ),
        (
            lambda c: c["services"]["volumes-init"].pop("user"),
            "volumes-init: does not give catsdogs-monitoring to uid 1034",
        ),
        (
            lambda c: c["services"]["catsdogs"].pop("depends_on"),
            "does not wait for volumes-init",
        ),
        (
            lambda c: c["services"]["drift-job"].update(command=["sleep infinity"]),
            "drift-job: does not run `catsdogs drift /var/lib/catsdogs/monitoring`",
        ),
        (
            lambda c: c["services"]["pushgateway"].pop("healthcheck"),
            "pushgateway: no healthcheck",
        ),
    ],
)
def test_checker_rejects_a_broken_copy(tmp_path, breakage, expected):
    compose = copy.deepcopy(_load(COMPOSE))
    breakage(compose)
    # Same depth below a root as deploy/compose/, with the real config files beside it, so
    # only the breakage differs.
    broken = tmp_path / "compose" / "docker-compose.yml"
    broken.parent.mkdir()
    (tmp_path / "prometheus").symlink_to(ROOT / "deploy" / "prometheus")
    (tmp_path / "grafana").symlink_to(ROOT / "deploy" / "grafana")
    broken.write_text(yaml.safe_dump(compose))
    problems = compose_problems(broken)
    assert any(expected in problem for problem in problems), problems


def test_checker_rejects_a_prometheus_config_without_the_service(tmp_path):
    config = _load(PROMETHEUS_CONFIG)
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = [
                target.replace("catsdogs:3000", "catsdogs:8080") for target in static["targets"]
            ]
    broken = tmp_path / "prometheus.yml"
    broken.write_text(yaml.safe_dump(config))
    assert any("does not scrape catsdogs:3000" in p for p in compose_problems(COMPOSE, broken))
