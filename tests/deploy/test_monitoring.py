"""Monitoring as code in deploy/prometheus/ and deploy/grafana/: promtool validates the
config and the alert rules and runs their unit tests; the Grafana dashboard and the alerts
only use metrics that a real `bentoml serve` exposes or that a real `catsdogs drift` run
pushes to a real Pushgateway; a real Prometheus (Debian's package) scrapes both and answers
queries for their metrics."""

import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from drift_photos import as_records, darkened_grayscale, frame, split_photos
from drift_photos import write_monitoring_dir as write_records
from helpers import ROOT, SAMPLE_DIR, free_port
from training.cli import app

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "catsdogs.json"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"

TIMEOUT = 120
# The project's own and BentoML's metric names; PromQL functions and labels never match.
METRIC = re.compile(r"\b(?:catsdogs|bentoml)_[a-z_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
ALERT_NAMES = {
    "CatsDogsDown",
    "CatsDogsHighErrorRate",
    "CatsDogsSlowPredictions",
    "CatsDogsLowConfidence",
    "CatsDogsOverloaded",
    "CatsDogsInputDrift",
    "CatsDogsDriftJobStale",
    "CatsDogsOtherRising",
    "CatsDogsReviewRising",
}
DRIFT_JOB = "catsdogs-drift"


# --- promtool ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is missing (Debian package `prometheus`; .ci/run installs it)")
    return path


def _run(*command: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT
    )


def test_prometheus_config_is_valid(promtool):
    result = _run(promtool, "check", "config", PROMETHEUS_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr
    jobs = {job["job_name"]: job for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())[
        "scrape_configs"]}  # fmt: skip
    # The drift job's pushed job and model labels must survive the scrape.
    assert jobs["pushgateway"]["honor_labels"] is True


def test_alert_rules_are_valid_and_annotated(promtool):
    result = _run(promtool, "check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    rules = [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]
    assert {rule["alert"] for rule in rules} == ALERT_NAMES
    for rule in rules:
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
    by_name = {rule["alert"]: rule for rule in rules}
    assert 'up{job="catsdogs"} == 0' in by_name["CatsDogsDown"]["expr"]
    assert by_name["CatsDogsDown"]["for"] == "1m"
    assert "[5m]" in by_name["CatsDogsHighErrorRate"]["expr"]
    assert "histogram_quantile(0.95" in by_name["CatsDogsSlowPredictions"]["expr"]
    assert 'le="0.7"' in by_name["CatsDogsLowConfidence"]["expr"]
    assert "[15m]" in by_name["CatsDogsLowConfidence"]["expr"]
    overloaded = by_name["CatsDogsOverloaded"]
    watched = 'catsdogs_rejected_inputs_total{job="catsdogs", reason="overloaded"}'
    assert watched in overloaded["expr"]
    assert overloaded["for"] == "5m"
    drift = by_name["CatsDogsInputDrift"]
    assert 'max by (model) (catsdogs_drift_detected{job="catsdogs-drift"}) == 1' in drift["expr"]
    stale = by_name["CatsDogsDriftJobStale"]
    assert "catsdogs_drift_last_run_timestamp_seconds" in stale["expr"]
    assert "absent(" in stale["expr"]
    assert stale["for"] == "1h"
    other, review = by_name["CatsDogsOtherRising"], by_name["CatsDogsReviewRising"]
    assert 'catsdogs_predictions_total{job="catsdogs", label="other"}' in other["expr"]
    assert "catsdogs_needs_review_total" in review["expr"]


def test_alert_unit_tests_pass(promtool):
    """alerts_test.yml: every alert fires on synthetic series (and stays quiet where it
    should)."""
    tests = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    firing = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert firing == ALERT_NAMES
    result = _run(promtool, "test", "rules", ALERTS_TEST.name, cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("original", "broken"),
    [
        ("for: 1m", "for: 10m"),  # service-down fires too late
        ("> 0.05", "> 0.5"),  # error-rate threshold too high
        ('reason="overloaded"}[2m]', 'reason="overloaded"}[10m]'),  # one spike would fire
        ('reason="overloaded"}[2m]', "}[2m]"),  # any refused upload would count as overload
        ("> 3 * 3600", "> 30 * 3600"),  # a stopped drift job would go unnoticed for a day
        ("max by (model) (catsdogs_drift_detected", "max(catsdogs_drift_detected"),  # no model
    ],
)
def test_alert_unit_tests_catch_a_broken_rule(promtool, tmp_path, original, broken):
    text = ALERTS.read_text()
    assert original in text
    (tmp_path / "alerts.yml").write_text(text.replace(original, broken, 1))
    shutil.copy(ALERTS_TEST, tmp_path / "alerts_test.yml")
    result = _run(promtool, "test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "FAILED" in result.stdout + result.stderr


# --- metric names against the live service -----------------------------------------------


def _predict(url: str, count: int = 4) -> None:
    photos = sorted(SAMPLE_DIR.glob("cat/*.jpg"))[:count]
    for path in photos:
        response = httpx.post(
            f"{url}/predict", files={"file": (path.name, path.read_bytes())}, timeout=TIMEOUT
        )
        assert response.status_code == 200, response.text
    # One refused upload, so catsdogs_rejected_inputs_total{reason} has a sample.
    response = httpx.post(
        f"{url}/predict", files={"file": ("not-a-photo.jpg", b"not an image")}, timeout=TIMEOUT
    )
    assert response.status_code == 400, response.text


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory):
    """A real Prometheus Pushgateway (Debian's package) on a loopback port: its base URL."""
    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if binary is None:
        pytest.skip("the Pushgateway is missing (Debian package `prometheus-pushgateway`)")
    port = free_port()
    log_path = tmp_path_factory.mktemp("pushgateway") / "pushgateway.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [binary, f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"pushgateway exited:\n{log_path.read_text()}"
            try:
                if httpx.get(f"{base}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        yield base
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def drift_pushed(pushgateway, tmp_path_factory) -> str:
    """A real `catsdogs drift` run pushed to the Pushgateway: the embedded sample's photos,
    grayscale and darkened, against a reference of the same photos as they are (drift)."""
    folder = tmp_path_factory.mktemp("drift")
    photos = split_photos(SAMPLE_DIR)
    reference = folder / "drift_reference.parquet"
    frame(photos).to_parquet(reference)
    darkened = frame(photos, darkened_grayscale)
    write_records(folder / "monitoring", as_records(darkened, "catsdogs:x"))
    result = CliRunner().invoke(
        app,
        ["drift", str(folder / "monitoring"), "--reference", str(reference),
         "--pushgateway", pushgateway, "--no-embedding-view"],
    )  # fmt: skip
    assert result.exit_code == 3, result.output  # drift found
    return pushgateway


def _samples(text: str) -> dict[str, str]:
    return {
        sample.name: family.type
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture(scope="module")
def live_metrics(server, drift_pushed) -> dict[str, str]:
    """Every sample name on the live /metrics (after a few /predict calls) and on the
    Pushgateway (after a drift job run) -> its family's type. A multi-worker server may answer
    from either worker: all are aggregated."""
    _predict(server.url)
    response = httpx.get(f"{server.url}/metrics", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    pushed = httpx.get(f"{drift_pushed}/metrics", timeout=TIMEOUT)
    assert pushed.status_code == 200, pushed.text
    drift_samples = {
        name: kind for name, kind in _samples(pushed.text).items()
        if name.startswith("catsdogs_drift_")
    }  # fmt: skip
    return _samples(response.text) | drift_samples


def _dashboard_exprs(dashboard: dict) -> list[str]:
    panels = list(dashboard["panels"])
    for panel in dashboard["panels"]:
        panels.extend(panel.get("panels", []))  # collapsed rows keep their panels inside
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def _alert_exprs() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def unknown_metrics(exprs: list[str], live: dict[str, str]) -> set[str]:
    """Names in PromQL expressions that the live /metrics does not have: an exact sample name
    must exist, and a `_bucket`/`_sum`/`_count` name must belong to a histogram (or summary),
    so `x_count` of a counter called `x_count_total` is not mistaken for it."""
    unknown = set()
    for name in {name for expr in exprs for name in METRIC.findall(expr)}:
        histogram_part = name.endswith(HISTOGRAM_SUFFIXES)
        if name not in live or (histogram_part and live[name] not in {"histogram", "summary"}):
            unknown.add(name)
    return unknown


def test_dashboard_and_alerts_use_only_live_metric_names(live_metrics):
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = _dashboard_exprs(dashboard)
    assert len(exprs) >= 10
    assert unknown_metrics(exprs, live_metrics) == set()
    assert unknown_metrics(_alert_exprs(), live_metrics) == set()
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert {
        "bentoml_service_request_total",
        "bentoml_service_request_duration_seconds_bucket",
        "catsdogs_batch_size_bucket",
        "catsdogs_batch_size_sum",
        "catsdogs_batch_size_count",
        "catsdogs_batch_inference_seconds_bucket",
        "catsdogs_batch_queue_wait_seconds_bucket",
        "catsdogs_predictions_total",
        "catsdogs_prediction_confidence_bucket",
        "catsdogs_rejected_inputs_total",
        "catsdogs_drift_detected",
        "catsdogs_drift_share",
        "catsdogs_drift_field_detected",
        "catsdogs_drift_embedding_score",
        "catsdogs_drift_window_records",
        "catsdogs_drift_last_run_timestamp_seconds",
    } <= used


def test_name_check_rejects_made_up_metrics(live_metrics):
    assert unknown_metrics(['rate(catsdogs_predictions_total{label="cat"}[5m])'], live_metrics) == (
        set()
    )
    assert unknown_metrics(["rate(catsdogs_prediction_total[5m])"], live_metrics) == {
        "catsdogs_prediction_total"
    }
    assert unknown_metrics(
        ["histogram_quantile(0.9, bentoml_request_duration_bucket)"], live_metrics
    )
    # A histogram's base name alone is not a series.
    assert unknown_metrics(["catsdogs_prediction_confidence"], live_metrics)


def test_dashboard_panels_cover_the_service_and_use_the_provisioned_datasource():
    (datasource,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    for panel in panels:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"], panel["title"]
    titles = " | ".join(panel["title"].lower() for panel in panels)
    for topic in (
        "request rate",
        "latency",
        "errors",
        "batch size (average)",
        "batch size (distribution)",
        "model call duration",
        "queue wait",
        "predictions by label",
        "confidence",
        "rejected inputs by reason",
        "input drift detected",
        "drift share",
        "drifted fields",
        "embedding drift score",
        "records in the drift window",
        "time since last run",
    ):
        assert topic in titles, topic
    latency = " ".join(
        target["expr"] for panel in panels if "latency" in panel["title"].lower()
        for target in panel["targets"]
    )  # fmt: skip
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}," in latency
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


# --- a real Prometheus scraping the real service ------------------------------------------


def _query(base: str, query: str) -> dict:
    response = httpx.get(f"{base}/api/v1/query", params={"query": query}, timeout=30)
    assert response.status_code in (200, 400, 422), response.text
    return response.json()


def test_real_prometheus_scrapes_the_service_and_the_drift_job(server, drift_pushed, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is missing (Debian package `prometheus`; .ci/run installs it)")
    target = urlparse(server.url).netloc
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [
                    {"job_name": "catsdogs", "static_configs": [{"targets": [target]}]},
                    {
                        "job_name": "pushgateway",
                        "honor_labels": True,
                        "static_configs": [{"targets": [urlparse(drift_pushed).netloc]}],
                    },
                ],
            }
        )
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _predict(server.url)
        results: dict[str, list] = {}
        wanted = [
            "bentoml_service_request_total",
            "catsdogs_predictions_total",
            # The photos above went through the adaptive batcher (an empty result until a
            # scrape made after they were classified).
            "catsdogs_batch_size_count > 0",
            'up{job="catsdogs"}',
            # The drift job's push, scraped from the Pushgateway with its own labels.
            f'catsdogs_drift_detected{{job="{DRIFT_JOB}"}}',
            'ALERTS{alertname="CatsDogsInputDrift", alertstate="firing"}',
        ]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(results.get(q) for q in wanted):
            assert process.poll() is None, f"prometheus exited:\n{log_path.read_text()[-3000:]}"
            for query in wanted:
                try:
                    answer = _query(base, query)
                except httpx.TransportError:
                    break  # not listening yet
                results[query] = answer["data"]["result"]
            time.sleep(1)
        missing = [query for query in wanted if not results.get(query)]
        assert not missing, f"no samples for {missing}:\n{log_path.read_text()[-3000:]}"
        assert {row["metric"]["job"] for row in results["bentoml_service_request_total"]} == {
            "catsdogs"
        }
        assert {row["value"][1] for row in results['up{job="catsdogs"}']} == {"1"}
        labels = {row["metric"]["label"] for row in results["catsdogs_predictions_total"]}
        assert labels == {"cat", "dog", "other"}  # every label is exported from the start
        [drifted] = results[f'catsdogs_drift_detected{{job="{DRIFT_JOB}"}}']
        assert drifted["metric"]["model"] == "catsdogs:x" and drifted["value"][1] == "1"
        [alert] = results['ALERTS{alertname="CatsDogsInputDrift", alertstate="firing"}']
        assert alert["metric"]["model"] == "catsdogs:x"
        stale = _query(base, 'ALERTS{alertname="CatsDogsDriftJobStale"}')["data"]["result"]
        assert stale == []  # the job has just run

        # The real Prometheus loaded the project's alert rules, and every dashboard query is
        # valid PromQL that it evaluates without error.
        rules = httpx.get(f"{base}/api/v1/rules", timeout=30).json()["data"]["groups"]
        assert {rule["name"] for group in rules for rule in group["rules"]} == ALERT_NAMES
        assert all(rule["health"] != "err" for group in rules for rule in group["rules"])
        for expr in _dashboard_exprs(json.loads(DASHBOARD.read_text())):
            answer = _query(base, expr.replace("$__rate_interval", "1m"))
            assert answer["status"] == "success", (expr, answer)
    finally:
        _stop(process)
