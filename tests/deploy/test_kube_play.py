"""deploy/k8s for real: the Kustomize base rendered by `kubectl kustomize` (with the session's
image set through an overlay's `images:`), and its Deployment and ConfigMap run with
`podman kube play` on the image the container test uses. The pod must start as the manifest's
non-root user, with its read-only root filesystem, its writable volumes, the environment from
the ConfigMap, answering probes, and pass scripts/smoke_test.py. `podman kube down` removes it
at the end, whatever happened.

podman is not a kubelet; what the test-only copy changes for it, and why (podman 4.3, Debian
bookworm's):
  - a hostPort on 127.0.0.1 (a free port) for the http port: kube play has no --publish;
  - the emptyDir volumes get a unique suffix: podman makes each one a named volume of that
    name, which must neither collide with another volume on the machine nor outlive the test;
  - the optional API-key Secret volume is dropped: podman 4.3 fails on a missing Secret even
    with `optional: true`, and does not mount a present one. test_k8s.py checks it instead;
  - `$(NAME)` references in env values are expanded in the copy: podman sets them literally
    (the kubelet expands those defined before them). The downward API's metadata.name it sets.
    (podman also lets envFrom override env, the kubelet the reverse: the manifests never set
    one variable in both);
  - the PersistentVolumeClaim becomes a named volume of the claim's name, which podman makes
    and the test removes.
The Service and the HorizontalPodAutoscaler (kube play cannot run them) stay schema-validated
and policy-checked by test_k8s.py. podman turns the probes into healthchecks that need curl
and systemd timers (neither is here), so this test requests the probes' paths and ports itself.
"""

import copy
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import yaml

from helpers import ROOT, free_port, run_smoke_test, wait_for_ready

from .conftest import PODMAN_MISSING
from .tools import expand_references, kustomize, overlay, run

pytestmark = pytest.mark.skipif(shutil.which("podman") is None, reason=PODMAN_MISSING)

BASE = ROOT / "deploy" / "k8s"
PLACEHOLDER_IMAGE = "ghcr.io/OWNER/catsdogs"
READY_TIMEOUT = 300


@dataclass
class Pod:
    container: str
    url: str
    deployment: dict  # as rendered by kustomize (before the test-only changes)
    config: dict  # the ConfigMap's data
    metrics: dict = field(default_factory=dict)

    @property
    def spec(self) -> dict:
        return self.deployment["spec"]["template"]["spec"]

    @property
    def manifest_container(self) -> dict:
        [container] = self.spec["containers"]
        return container

    def exec(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return run("podman", "exec", self.container, *command, check=check, timeout=60)


def _by_kind(objects: list[dict], kind: str) -> dict:
    [obj] = [obj for obj in objects if obj["kind"] == kind]
    return obj


def _for_podman(deployment: dict, port: int, suffix: str, config: dict, pod_name: str) -> dict:
    """The test-only copy (module docstring): hostPort, unique volume names, no Secret,
    $(NAME) references expanded."""
    play = copy.deepcopy(deployment)
    spec = play["spec"]["template"]["spec"]
    [container] = spec["containers"]
    [http] = [p for p in container["ports"] if p["name"] == "http"]
    http.update(hostPort=port, hostIP="127.0.0.1")
    secrets = {v["name"] for v in spec["volumes"] if "secret" in v}
    spec["volumes"] = [v for v in spec["volumes"] if v["name"] not in secrets]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] not in secrets]
    # podman sets $(NAME) references in env values literally: expand them as the kubelet does.
    values = {**config, "POD_NAME": pod_name}
    for item in container["env"]:
        if "value" in item:
            item["value"] = expand_references(item["value"], values)
    for volume in spec["volumes"]:
        volume["name"] += f"-{suffix}"
    for mount in container["volumeMounts"]:
        mount["name"] += f"-{suffix}"
    return play


def _logs(container: str) -> str:
    logs = run("podman", "logs", container, check=False)
    return (logs.stdout + logs.stderr)[-3000:]


@pytest.fixture(scope="module")
def pod(service_image, tmp_path_factory) -> Iterator[Pod]:
    workdir = tmp_path_factory.mktemp("kube-play")
    suffix = uuid.uuid4().hex[:8]
    name, tag = service_image.image.rsplit(":", 1)
    # The image as CD sets it, and a unique name for the pod (and its ConfigMap).
    rendered = kustomize(
        overlay(
            workdir / "overlay",
            BASE,
            images=[{"name": PLACEHOLDER_IMAGE, "newName": name, "newTag": tag}],
            nameSuffix=f"-{suffix}",
        )
    )
    deployment = _by_kind(rendered, "Deployment")
    config_map = _by_kind(rendered, "ConfigMap")
    port = free_port()
    pod_name = f"{deployment['metadata']['name']}-pod-0"  # podman's name for replica 0
    play = _for_podman(deployment, port, suffix, config_map["data"], pod_name)
    kube_file = workdir / "play.yaml"
    kube_file.write_text(yaml.safe_dump_all([config_map, play]))
    play_volumes = play["spec"]["template"]["spec"]["volumes"]
    volumes = [v["name"] for v in play_volumes if "persistentVolumeClaim" not in v]
    # podman backs a claim with a named volume of the claim's name, which kube down keeps (as
    # a cluster keeps a PersistentVolumeClaim); the test removes it.
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in play_volumes
        if "persistentVolumeClaim" in v
    ]
    container = f"{pod_name}-{play['spec']['template']['spec']['containers'][0]['name']}"
    metrics: dict = {"image": service_image.image}
    try:
        started = time.monotonic()
        run("podman", "kube", "play", kube_file, timeout=300)

        def exited() -> str | None:
            state = run("podman", "inspect", "--format", "{{.State.Running}}", container)
            return None if state.stdout.strip() == "true" else _logs(container)

        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_ready(f"{url}/readyz", READY_TIMEOUT, exited)
        except RuntimeError as error:
            raise RuntimeError(f"{error}\n{_logs(container)}") from error
        metrics["kube_play_start_to_ready_seconds"] = round(time.monotonic() - started, 1)
        yield Pod(container, url, deployment, config_map["data"], metrics)
    finally:
        started = time.monotonic()
        down = run("podman", "kube", "down", kube_file, check=False, timeout=300)
        metrics["kube_down_seconds"] = round(time.monotonic() - started, 1)
        # Whatever `kube down` left (it removes the pod and the emptyDir volumes).
        left = run("podman", "pod", "exists", pod_name, check=False).returncode == 0
        if left:
            run("podman", "pod", "rm", "-f", pod_name, check=False, timeout=120)
        for volume in volumes:
            if run("podman", "volume", "exists", volume, check=False).returncode == 0:
                left = True
                run("podman", "volume", "rm", "-f", volume, check=False)
        for claim in claims:
            run("podman", "volume", "rm", "-f", claim, check=False)
        print(f"\nkube play metrics: {json.dumps(metrics)}")
        assert down.returncode == 0, down.stdout + down.stderr
        assert not left, "podman kube down left the pod or its volumes behind"


def test_pod_passes_the_smoke_test(pod):
    result = run_smoke_test(pod.url)
    assert result.returncode == 0, result.stdout + result.stderr


def test_probes_answer_on_their_paths_and_ports(pod):
    container = pod.manifest_container
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for name in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container[name]["httpGet"]
        port = ports.get(probe["port"], probe["port"])
        assert port == 3000, name  # the one published port, which the pod's url reaches
        response = httpx.get(f"{pod.url}{probe['path']}", timeout=30)
        assert response.status_code == 200, (name, response.text)


def test_pod_runs_as_the_manifest_user_without_privileges(pod):
    security = pod.spec["securityContext"]
    assert pod.exec("id", "-u").stdout.strip() == str(security["runAsUser"])
    assert pod.exec("id", "-g").stdout.strip() == str(security["runAsGroup"])
    assert security["runAsUser"] != 0
    status = dict(
        line.split(":", 1) for line in pod.exec("cat", "/proc/1/status").stdout.splitlines()
    )
    # capabilities: drop ALL; allowPrivilegeEscalation: false; seccomp RuntimeDefault.
    assert status["CapEff"].strip() == status["CapBnd"].strip() == "0" * 16
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"  # a filter is applied


def test_root_filesystem_is_read_only_and_volumes_are_writable(pod):
    container = pod.manifest_container
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    writable = {
        v["name"] for v in pod.spec["volumes"] if {"emptyDir", "persistentVolumeClaim"} & v.keys()
    }
    paths = [m["mountPath"] for m in container["volumeMounts"] if m["name"] in writable]
    assert sorted(paths) == ["/tmp", "/var/lib/bentoml", "/var/lib/catsdogs/monitoring"]
    for path in paths:
        written = pod.exec("sh", "-c", f"echo ok > {path}/probe && cat {path}/probe", check=False)
        assert (written.returncode, written.stdout.strip()) == (0, "ok"), (path, written.stderr)
    for path in ("/probe", "/home/bentoml/bento/probe", "/etc/probe"):
        refused = pod.exec("sh", "-c", f"echo no > {path}", check=False)
        assert refused.returncode != 0, path
        assert "Read-only file system" in refused.stderr, (path, refused.stderr)
    # The service really uses them: BentoML's home and the prediction log (after the smoke
    # test's or this test's predictions).
    photo = ROOT / "data" / "sample" / "cat" / "cat.102.jpg"
    response = httpx.post(
        f"{pod.url}/predict", files={"file": (photo.name, photo.read_bytes())}, timeout=60
    )
    assert response.status_code == 200, response.text
    monitoring = pod.exec("sh", "-c", "echo $CATSDOGS_MONITORING_DIR").stdout.strip()
    assert monitoring.startswith("/var/lib/catsdogs/monitoring/")  # the pod's own folder
    deadline = time.monotonic() + 30
    while not pod.exec("find", monitoring, "-type", "f").stdout.strip():
        assert time.monotonic() < deadline, f"no prediction records in {monitoring}"
        time.sleep(1)
    home = pod.exec("test", "-d", "/var/lib/bentoml/prometheus_multiproc_dir", check=False)
    assert home.returncode == 0, "no prometheus_multiproc_dir in $BENTOML_HOME"


def test_environment_comes_from_the_config_map(pod):
    env = dict(line.split("=", 1) for line in pod.exec("env").stdout.splitlines() if "=" in line)
    assert pod.config["CATSDOGS_THREADS"] == env["CATSDOGS_THREADS"] == "2"
    for key, value in pod.config.items():
        assert env.get(key) == value, key
    pod_name = pod.exec("cat", "/proc/sys/kernel/hostname").stdout.strip()  # a pod's hostname
    for item in pod.manifest_container["env"]:
        if "valueFrom" in item:  # the downward API: only the pod's name is used
            assert item["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
            expected = pod_name
        else:  # $(NAME) expands variables defined before it, as the kubelet does
            expected = expand_references(item["value"], env)
        assert env.get(item["name"]) == expected, item["name"]
    # API keys stay off unless the ConfigMap names the key file (deploy/k8s/README.md).
    assert "CATSDOGS_API_KEYS_FILE" not in env


def test_pod_gets_the_manifest_resources(pod):
    limits = pod.manifest_container["resources"]["limits"]
    assert (limits["cpu"], limits["memory"]) == ("2", "3Gi")
    host = json.loads(run("podman", "inspect", pod.container).stdout)[0]["HostConfig"]
    assert host["Memory"] == 3 * 2**30
    assert host["NanoCpus"] == 2 * 10**9
