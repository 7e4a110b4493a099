"""The service's own Prometheus metrics, beside BentoML's request metrics."""

import functools
from collections.abc import Sequence
from typing import Any

from catsdogs.answers import OTHER, Answer
from catsdogs.batching import BatchStats
from catsdogs.uploads import Upload


class ServiceMetrics:
    """One instance per process, made on first use (service_metrics()): by then the worker has
    set PROMETHEUS_MULTIPROC_DIR, so every worker's values reach /metrics."""

    def __init__(self):
        # Imported here, not at module level: prometheus_client picks its multiprocess mode
        # at import, and BentoML workers set PROMETHEUS_MULTIPROC_DIR after service.py loads.
        import prometheus_client as prom

        self.predictions = prom.Counter(
            "catsdogs_predictions", "Answers by label: cat, dog or other.", ["label"]
        )
        self.needs_review = prom.Counter(
            "catsdogs_needs_review", "Answers flagged for a person to check, by label.", ["label"]
        )
        self.confidence = prom.Histogram(
            "catsdogs_prediction_confidence",
            "Calibrated probability of the predicted label.",
            buckets=(0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
        )
        self.novelty = prom.Histogram(
            "catsdogs_novelty_score",
            "Novelty score of each answered photo (distance from the training photos).",
            buckets=(0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.8),
        )
        self.rejected = prom.Counter(
            "catsdogs_rejected_inputs", "Uploads refused, by reason.", ["reason"]
        )
        self.image_bytes = prom.Histogram(
            "catsdogs_image_bytes",
            "Size of accepted uploads in bytes.",
            buckets=(1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7, 3e7),
        )
        self.image_pixels = prom.Histogram(
            "catsdogs_image_pixels",
            "Width x height of accepted images.",
            buckets=(1e4, 5e4, 1e5, 2.5e5, 5e5, 1e6, 4e6, 1.6e7, 4e7),
        )
        self.batch_size = prom.Histogram(
            "catsdogs_batch_size",
            "Images per model call (adaptive batching).",
            buckets=(1, 2, 4, 8, 16, 32, 64),
        )
        self.batch_seconds = prom.Histogram(
            "catsdogs_batch_inference_seconds",
            "Duration of one model call.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.queue_wait_seconds = prom.Histogram(
            "catsdogs_batch_queue_wait_seconds",
            "How long the oldest image of a batch waited for the model.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.model_info = prom.Gauge(
            "catsdogs_model_info",
            "The model being served (value 1).",
            ["tag", "precision", "mlflow_model_version", "mlflow_run_id"],
            multiprocess_mode="max",
        )

    def set_model(
        self, class_names: Sequence[str], tag: str, precision: str, metadata: dict[str, Any]
    ) -> None:
        self.model_info.labels(
            tag=tag,
            precision=precision,
            mlflow_model_version=str(metadata.get("mlflow_model_version", "")),
            mlflow_run_id=str(metadata.get("mlflow_run_id", "")),
        ).set(1)
        for label in (*class_names, OTHER):  # every label visible at 0 from the start
            self.predictions.labels(label=label)
            self.needs_review.labels(label=label)

    def record_batch(self, stats: BatchStats) -> None:
        self.batch_size.observe(stats.size)
        self.batch_seconds.observe(stats.inference_s)
        self.queue_wait_seconds.observe(stats.queue_wait_s)

    def record(self, upload: Upload, answer: Answer) -> None:
        self.predictions.labels(label=answer.label).inc()
        if answer.needs_review:
            self.needs_review.labels(label=answer.label).inc()
        self.confidence.observe(answer.confidence)
        self.novelty.observe(answer.novelty_score)
        self.image_bytes.observe(upload.size_bytes)
        self.image_pixels.observe(upload.image.width * upload.image.height)


@functools.cache
def service_metrics() -> ServiceMetrics:
    return ServiceMetrics()
