"""The serving benchmark's arithmetic: pooling rounds, percentiles, the target checks, the
report files. (The benchmark itself is run by hand: `make benchmark`.)"""

import importlib.util
import json

import pytest

from helpers import ROOT

spec = importlib.util.spec_from_file_location("serving_benchmark", ROOT / "benchmarks/serving.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)


def window(concurrency, latencies, seconds, errors=0):
    statuses = {200: len(latencies), **({503: errors} if errors else {})}
    return {"concurrency": concurrency, "latencies_ms": latencies, "statuses": statuses,
            "seconds": seconds}  # fmt: skip


def test_rounds_pool_into_one_row():
    row = benchmark.summarize(
        [window(8, [10.0] * 90 + [50.0] * 10, 2.0), window(8, [20.0] * 100, 3.0, errors=2)]
    )
    assert row["ok"] == 200 and row["errors"] == 2 and row["requests"] == 202
    assert row["images_per_s"] == pytest.approx(200 / 5.0)
    assert row["images_per_s_by_round"] == [pytest.approx(50.0), pytest.approx(100 / 3)]
    assert (row["p50_ms"], row["p95_ms"], row["p99_ms"]) == (20.0, 50.0, 50.0)
    assert row["statuses"] == {"200": 200, "503": 2}


def test_limits_average_each_batch_size_then_take_the_best():
    rounds = [
        {"runtime": "onnx", "images_per_s_by_batch": {"1": 90.0, "8": 100.0},
         "single_image_ms": 10.0},
        {"runtime": "onnx", "images_per_s_by_batch": {"1": 100.0, "8": 96.0},
         "single_image_ms": 12.0},
    ]  # fmt: skip
    pooled = benchmark.pool_limits(rounds)
    assert pooled["best_batch_size"] == "8" and pooled["images_per_s"] == pytest.approx(98.0)
    assert pooled["single_image_ms"] == pytest.approx(11.0)


def make_result(service_rate, baseline_rate, c1_p50, errors=0):
    def rows(rate, p50, p99, errors=0):
        return [
            {"concurrency": c, "images_per_s": rate, "p50_ms": p50, "p95_ms": p99,
             "p99_ms": p99, "errors": errors}
            for c in (1, 32, 64)
        ]  # fmt: skip

    service = rows(service_rate, 100.0, 200.0, errors)
    service[0]["p50_ms"] = c1_p50
    limit = {"runtime": "onnx", "images_per_s_by_batch": {"1": 80.0, "4": 100.0},
             "best_batch_size": "4", "images_per_s": 100.0, "single_image_ms": 10.0}  # fmt: skip
    return {
        "date": "now", "model": "catsdogs:test", "photos": "p", "photo_count": 4,
        "seconds_per_level": 1, "rounds": 1, "cpus": 2, "service_configs": {"service": {}},
        "limit_onnx": limit, "limit_keras": {**limit, "runtime": "keras", "images_per_s": 50.0},
        "service": service, "baseline_keras": rows(baseline_rate, 300.0, 400.0),
    }  # fmt: skip


def test_checks_pass_and_fail_against_the_targets(tmp_path):
    passing = benchmark.compare(make_result(95.0, 20.0, c1_p50=12.0))
    assert all(check["met"] for check in passing), passing
    failing = {c["check"]: c for c in benchmark.compare(make_result(60.0, 20.0, 20.0, 3))}
    assert not failing["service / ONNX limit at c=32 and c=64"]["met"]
    assert failing["service / ONNX limit at c=32 and c=64"]["ratio"] == pytest.approx(0.6)
    assert not failing["c=1 p50 / in-process single-image latency (at most)"]["met"]
    assert not failing["errors at c=32 and c=64"]["met"]
    baseline = failing["service / naive baseline at c=32 and c=64"]
    assert not baseline["met"] and baseline["ratio"] == pytest.approx(3.0)

    result = make_result(95.0, 20.0, 12.0)
    result["checks"] = passing
    benchmark.write_markdown(result, tmp_path / "serving.md")
    benchmark.plot(result, tmp_path / "serving.png")
    report = (tmp_path / "serving.md").read_text()
    assert "| service | 32 | 95.0 |" in report and "| baseline_keras | 64 | 20.0 |" in report
    assert (tmp_path / "serving.png").stat().st_size > 10_000
    json.dumps(result)  # the JSON report is serialisable
