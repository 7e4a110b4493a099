"""The serving benchmark's arithmetic: pooling rounds, percentiles, the target checks, the
report files, and the pipelined limit on a stand-in classifier. (The benchmark itself is run
by hand: `make benchmark`.)"""

import importlib.util
import json
import time
import types

import numpy as np
import pytest

from helpers import ROOT, photos

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


def _limit(rate_a, rate_b, single_ms, share=0.05):
    return {"runtime": "onnx", "precision": "int8",
            "images_per_s_by_setting": {"a": rate_a, "b": rate_b}, "single_image_ms": single_ms,
            "novelty_share_by_batch": {"8": share, "32": share / 2}}  # fmt: skip


def test_limits_average_each_setting_then_take_the_best():
    pooled = benchmark.pool_limits([_limit(90.0, 100.0, 10.0), _limit(100.0, 96.0, 12.0, 0.07)])
    assert pooled["best_setting"] == "b" and pooled["images_per_s"] == pytest.approx(98.0)
    assert pooled["single_image_ms"] == pytest.approx(11.0)
    assert pooled["novelty_share_by_batch"]["8"] == pytest.approx(0.06)


def make_result(service_rate, c1_p50, errors=0, share=0.05):
    def rows(rate, p50, p99, errors=0):
        return [
            {"concurrency": c, "images_per_s": rate, "p50_ms": p50, "p95_ms": p99,
             "p99_ms": p99, "errors": errors}
            for c in (1, 32, 64)
        ]  # fmt: skip

    service = rows(service_rate, 100.0, 200.0, errors)
    service[0]["p50_ms"] = c1_p50
    limit = {**_limit(80.0, 100.0, 10.0, share), "best_setting": "b", "images_per_s": 100.0}
    return {
        "date": "now", "model": "catsdogs:test", "photos": "p", "photo_count": 4,
        "seconds_per_level": 1, "rounds": 1, "cpus": 2,
        "limit_onnx_int8": limit, "limit_onnx_fp32": {**limit, "precision": "fp32"},
        "limit_keras_fp32": {**limit, "runtime": "keras", "images_per_s": 50.0},
        "service": service, "service_fp32": rows(60.0, 120.0, 220.0),
        "baseline_keras": rows(20.0, 300.0, 400.0), "baseline_onnx_fp32": rows(50.0, 150.0, 200.0),
        "baseline_onnx_int8": rows(75.0, 100.0, 150.0),
    }  # fmt: skip


def test_checks_pass_and_fail_against_the_targets(tmp_path):
    passing = benchmark.compare(make_result(95.0, c1_p50=12.0))
    assert all(check["met"] for check in passing), passing
    failing = {c["check"]: c for c in benchmark.compare(make_result(60.0, 20.0, 3, share=0.2))}
    assert not failing["service / pipelined int8 limit"]["met"]
    assert failing["service / pipelined int8 limit"]["ratio"] == pytest.approx(0.6)
    assert not failing["c=1 p50 / in-process single-image latency"]["met"]
    assert not failing["errors at c=32 and c=64"]["met"]
    assert not failing["novelty scores' share of a model call"]["met"]
    same_precision = failing["service / FastAPI + ONNX int8 (same precision)"]
    assert not same_precision["met"] and same_precision["ratio"] == pytest.approx(0.8)
    assert failing["service / FastAPI + compiled Keras"]["ratio"] == pytest.approx(3.0)

    result = make_result(95.0, 12.0)
    result["checks"] = passing
    benchmark.write_markdown(result, tmp_path / "serving.md")
    benchmark.plot(result, tmp_path / "serving.png")
    report = (tmp_path / "serving.md").read_text()
    assert "| service | 32 | 95.0 |" in report and "| baseline_onnx_int8 | 64 | 75.0 |" in report
    assert (tmp_path / "serving.png").stat().st_size > 10_000
    json.dumps(result)  # the JSON report is serialisable


class _SlowOpenWorld:
    """Answers from model outputs in a fixed time (a tenth of the model's call)."""

    def answer(self, probabilities, embeddings, class_names):
        time.sleep(0.001)
        return [None] * len(probabilities)


class _SlowClassifier:
    """Answers a batch in a fixed time per call, like a model would."""

    image_size = 64
    class_names = ("cat", "dog")
    open_world = _SlowOpenWorld()

    def __init__(self):
        self.calls = []

    def answer_pixels(self, pixels):
        self.calls.append(len(pixels))
        time.sleep(0.01)
        return [None] * len(pixels)

    def predict_pixels(self, pixels):
        time.sleep(0.01)
        return types.SimpleNamespace(probabilities=np.zeros((len(pixels), 2)), embeddings=None)


def test_the_pipelined_limit_counts_answered_images():
    encoded = [path.read_bytes() for path in photos("cat")[:8]]
    classifier = _SlowClassifier()
    rate = benchmark.pipelined(classifier, encoded, batch=4, decoders=2, seconds=0.5)
    assert set(classifier.calls) == {4}
    # One 10 ms call per batch of 4: never more than 400 images/s, whatever the decoders do.
    assert 0 < rate <= 4 / 0.01
    # The answers' own time over the model's: 1 ms over 10 ms (sleeps overshoot a little).
    assert benchmark.novelty_share(classifier, encoded, 4) == pytest.approx(0.1, abs=0.05)
    assert np.isfinite(rate)
