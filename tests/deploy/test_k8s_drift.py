"""deploy/k8s for the drift job: the CronJob and the shared records volume are in the base and
schema-valid, every pod writes its records to its own folder of that volume, and the CronJob
reads them read-only and runs a `catsdogs drift` command line that the CLI accepts.

Reads the manifests themselves (not a rendering of the base), so it holds whichever way
test_k8s.py renders Kustomize."""

import kubernetes_validate
import typer
import yaml

from helpers import ROOT
from training.cli import app
from training.drift import DRIFT_EXIT_CODE

from .tools import expand_references

BASE = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.30.0"  # as in test_k8s.py
PLACEHOLDER_IMAGE = "ghcr.io/OWNER/catsdogs"


def _load(name: str) -> dict:
    [obj] = [doc for doc in yaml.safe_load_all((BASE / name).read_text()) if doc]
    return obj


def _pod(obj: dict) -> dict:
    spec = obj["spec"]
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


CRONJOB = _load("drift-cronjob.yaml")
CLAIM = _load("monitoring-pvc.yaml")
DEPLOYMENT = _load("deployment.yaml")
CONFIG = _load("configmap.yaml")


def test_the_base_lists_them_and_they_are_schema_valid():
    resources = yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"]
    assert {"drift-cronjob.yaml", "monitoring-pvc.yaml"} <= set(resources)
    for obj in (CRONJOB, CLAIM):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_every_pod_writes_to_its_own_folder_of_the_shared_volume():
    pod = _pod(DEPLOYMENT)
    [container] = pod["containers"]
    [root] = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == "monitoring"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes["monitoring"]["persistentVolumeClaim"]["claimName"]
    assert claim == CLAIM["metadata"]["name"]
    assert CLAIM["spec"]["accessModes"] == ["ReadWriteMany"]  # pods on many nodes + the job
    env = {item["name"]: item for item in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # The kubelet expands $(VAR) from the variables defined before it (envFrom's included).
    assert "CATSDOGS_MONITORING_DIR" not in CONFIG["data"]  # env would override it anyway
    known = dict(CONFIG["data"]) | {"POD_NAME": "catsdogs-7d9f-abcde"}
    records = expand_references(env["CATSDOGS_MONITORING_DIR"]["value"], known)
    assert records == f"{root}/catsdogs-7d9f-abcde"


def test_cronjob_reads_the_records_read_only_and_its_command_parses():
    pod = _pod(CRONJOB)
    [container] = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    [records] = [m for m in container["volumeMounts"] if m["name"] == "monitoring"]
    assert records["readOnly"] is True
    claim = volumes["monitoring"]["persistentVolumeClaim"]
    assert claim["claimName"] == CLAIM["metadata"]["name"] and claim["readOnly"] is True
    assert container["command"] == ["catsdogs"]
    args = [
        expand_references(arg, {"CATSDOGS_PUSHGATEWAY": "http://gw:9091"})
        for arg in container["args"]
    ]
    assert args[:2] == ["drift", records["mountPath"]]
    assert "--pushgateway=http://gw:9091" in args
    # The options exist (a typo would make every run fail with a usage error).
    drift = typer.main.get_command(app).commands["drift"]
    context = drift.make_context("drift", args[1:])
    assert str(context.params["records"]) == records["mountPath"]
    assert context.params["since"] == "24h"


def test_cronjob_image_references_and_exit_codes():
    pod = _pod(CRONJOB)
    [container] = pod["containers"]
    assert container["image"] == f"{PLACEHOLDER_IMAGE}-train:latest"  # placeholder, see comment
    # The references come from the served image's model store, copied where BENTOML_HOME is.
    [init] = pod["initContainers"]
    assert init["image"] == PLACEHOLDER_IMAGE
    env = {item["name"]: item.get("value") for item in container["env"]}
    home = env["BENTOML_HOME"]
    assert {m["mountPath"] for m in init["volumeMounts"]} == {home}
    assert home in {m["mountPath"] for m in container["volumeMounts"]}
    # "Drift found" fails the Job at once; other failures are retried.
    job = CRONJOB["spec"]["jobTemplate"]["spec"]
    [rule] = job["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob"
    assert rule["onExitCodes"]["values"] == [DRIFT_EXIT_CODE]
    assert pod["restartPolicy"] == "Never"
    assert CRONJOB["spec"]["concurrencyPolicy"] == "Forbid"
    # Hourly: CatsDogsDriftJobStale allows three missed runs.
    minute, hour, *_ = CRONJOB["spec"]["schedule"].split()
    assert minute.isdigit() and hour == "*"
    for item in (*pod["initContainers"], *pod["containers"]):
        security = item["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsUser"] == _pod(DEPLOYMENT)["securityContext"]["runAsUser"]
