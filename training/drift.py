"""The drift job, `catsdogs drift`: the service's prediction records against the reference saved
with the model that answered them, compared with Evidently; an HTML report, a JSON summary,
Prometheus gauges and an exit code for cron and CI.

How the service's records are written: `bentoml.monitor("catsdogs_predictions")` with
`monitoring={"type": "default", "options": {"log_path": DIR}}` (BentoML 1.4.40; seen by running
`bentoml serve service:CatsDogs` with two workers, sending photos and restarting it, and in
bentoml/_internal/monitoring/default.py):

- Files: `DIR/catsdogs_predictions/data/data.<worker>.log` and
  `DIR/catsdogs_predictions/schema/schema.<worker>.log`, one pair per worker process.
  `<worker>` is BentoML's worker index, counted from 1 (CATSDOGS_WORKERS=2 writes data.1.log
  and data.2.log). Every pod is worker 1, so pods that share a volume need a folder each
  (deploy/k8s gives each pod a subfolder named after it).
- Data: one JSON object per line and per record (python-json-logger): the fields in the order
  service.py logs them, then BentoML's own `timestamp`, `request_id` and `trace_id`.
  `timestamp` is `datetime.now().isoformat()`, i.e. the service's local time with microseconds
  and no UTC offset (containers run in UTC), taken when the record is written, just after the
  response is sent. `request_id` and `trace_id` are "None" and "0": /predict is left out of
  tracing and records are written in a background task, so only `x_request_id` names the
  request. A /predict_batch request writes one line per image (same x_request_id and latency).
  Refused uploads write nothing.
- The data file comes from a logging TimedRotatingFileHandler (when="D", no backupCount). It
  is opened for appending, so a restarted worker goes on in the same file. It is renamed to
  `data.<worker>.log.YYYY-MM-DD` 24 h after the handler opened it (or after the existing
  file's mtime) and never deleted: retention is up to the operator.
- Each line is written whole and flushed, but a reader can catch a last line mid-write. A
  process killed mid-write leaves a cut line, and after a restart the next record continues
  on that same line. Lines that don't parse are skipped and counted.
- Schema: one JSON line per worker process start, before its first record, appended again
  after every restart: `{"meta_data": {"bento_name", "bento_version"}, "columns": [{"name",
  "role", "type"}, ...]}`. It doesn't list timestamp, request_id or trace_id. The job takes
  field types from FIELDS below instead, which also covers fields that older records lack.

Evidently 0.7 (`Report`, `Dataset`, `DataDefinition`): `DataDriftPreset` tests each
per-record field, and `EmbeddingsDrift` tests the embedding columns as one multivariate
sample. Evidently never ships in the serving image: only `training/` imports it.
"""

import json
import logging
import math
import re
import time
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

MONITOR_NAME = "catsdogs_predictions"
REFERENCE_FILE = "drift_reference.parquet"
TIMESTAMP = "timestamp"
MODEL = "model"
EMBEDDING = "embedding"
EMBEDDING_DIM = 16

FieldKind = Literal["numerical", "categorical", "embedding"]
# The record contract: every field compared between a window of records and the model's
# reference, with the kind of test it gets. The service logs these (plus x_request_id,
# latency_ms and model, which have no reference and are not compared); the reference holds the
# same fields computed on the validation split. Missing on either side: skipped and reported.
FIELDS: dict[str, FieldKind] = {
    "width": "numerical",
    "height": "numerical",
    "brightness": "numerical",  # mean pixel of the prepared image, 0..1
    "saturation": "numerical",  # mean HSV saturation, 0..1
    "bytes": "numerical",
    "label": "categorical",  # cat, dog or other
    "confidence": "numerical",  # calibrated
    "needs_review": "categorical",
    "novelty_score": "numerical",
    # A fixed 16-dimensional projection of the image embedding, fitted at training time.
    **{f"embedding_{i:02d}": "embedding" for i in range(EMBEDDING_DIM)},
}

# Share of the compared per-record fields that must drift for a model's window to count as
# drifted (the embeddings count on their own). Measured in tests/code/test_drift.py on windows
# of 200 real photos: darkened grayscale uploads move brightness, saturation and bytes (3 of
# the 6 fields the test photos have, 2 of the 5 today's records hold); of 100 undrifted
# windows, 3 reached 0.3 (2 of 6 fields: each test fires 5% of the time by design).
DEFAULT_THRESHOLD = 0.3
# Fewer records than this in a model's window: not compared (the tests have no power).
DEFAULT_MIN_RECORDS = 50
# The exit code for "drift found", apart from 1 (the job failed) and 2 (bad usage).
DRIFT_EXIT_CODE = 3
PUSHGATEWAY_JOB = "catsdogs-drift"

# Numerical fields: Kolmogorov-Smirnov at p < 0.05 whatever the reference size. Evidently's
# default switches to a normed Wasserstein distance >= 0.1 above 1,000 reference rows, which
# windows of a few hundred undrifted records cross by chance (against 1,190 reference rows, 9
# of 20 undrifted windows of 200 real photos reached the 0.3 share; measured for the tests).
# Categorical fields keep Evidently's choice (chi-square or Z-test, Jensen-Shannon above 1,000
# rows).
NUMERICAL_METHOD = "ks"
# Embeddings: drift when a classifier tells window from reference with a ROC AUC above this
# (0.5 is chance); see embedding_method().
EMBEDDING_AUC = 0.6

_DATA_FILE = re.compile(r"^data\.\d+\.log(\..+)?$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


# --- reading the records ------------------------------------------------------------------


@dataclass
class Records:
    frame: pd.DataFrame  # one row per prediction, sorted by timestamp
    files: list[Path]
    skipped_lines: int  # partial or corrupt lines, and lines without a timestamp


def record_files(folder: Path) -> list[Path]:
    """Every bentoml.monitor data file under folder, at any depth: the service's monitoring
    dir, a volume holding one such dir per pod, or a copy of any part of them (rotated files
    `data.<worker>.log.<date>` included, schema files left out)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no records folder at {folder}")
    return sorted(path for path in folder.rglob("data.*") if _DATA_FILE.match(path.name))


def parse_lines(lines: Iterable[str]) -> tuple[list[dict[str, Any]], int]:
    """The records among lines, and how many non-empty lines were not a JSON object."""
    records, skipped = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            skipped += 1
    return records, skipped


def read_records(folder: Path, since: datetime | None = None) -> Records:
    """All prediction records under folder, from every worker's (and pod's) files. With
    `since`, files last written before it are not read: their records are all older (a copy
    that did not keep modification times is read whole, no harm done)."""
    files = record_files(folder)
    if since is not None:
        files = [path for path in files if datetime.fromtimestamp(path.stat().st_mtime) >= since]
    rows: list[dict[str, Any]] = []
    skipped = 0
    for path in files:
        with path.open(encoding="utf-8", errors="replace") as lines:
            records, bad = parse_lines(lines)
        rows += records
        skipped += bad
        if bad:
            logger.info("%s: skipped %d line(s) that are not a whole record", path, bad)
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame({TIMESTAMP: pd.Series(dtype="datetime64[ns]"), MODEL: []})
    times = pd.to_datetime(frame.get(TIMESTAMP), format="ISO8601", errors="coerce")
    frame[TIMESTAMP] = times.dt.tz_localize(None) if times.dt.tz is not None else times
    undated = int(frame[TIMESTAMP].isna().sum())
    frame = frame[frame[TIMESTAMP].notna()].sort_values(TIMESTAMP, kind="stable")
    return Records(frame.reset_index(drop=True), files, skipped + undated)


# --- the window --------------------------------------------------------------------------


def parse_time(value: str, now: datetime | None = None) -> datetime:
    """A point in time: ISO 8601 (`2026-12-01`, `2026-12-01T06:00`, `...+02:00`) or a
    duration back from now (`90m`, `24h`, `7d`, `2w`). Record timestamps are the service's
    local time without an offset, so times with an offset become the local time of this job
    (the service and the job share a timezone: UTC in containers)."""
    now = now or datetime.now()
    match = _DURATION.match(value.strip())
    if match:
        amount, unit = float(match[1]), _DURATION_UNITS[match[2]]
        return now - timedelta(**{unit: amount})
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"{value!r} is neither an ISO 8601 time nor a duration like 90m, 24h or 7d"
        ) from None
    return moment.astimezone().replace(tzinfo=None) if moment.tzinfo else moment


@dataclass(frozen=True)
class Window:
    last: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    def select(self, records: pd.DataFrame) -> pd.DataFrame:
        """Records at or after `since` and before `until`, then the last `last` of them."""
        frame = records
        if self.since is not None:
            frame = frame[frame[TIMESTAMP] >= self.since]
        if self.until is not None:
            frame = frame[frame[TIMESTAMP] < self.until]
        if self.last is not None:
            frame = frame.tail(self.last)
        return frame

    def describe(self) -> dict[str, Any]:
        return {
            "last": self.last,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }


# --- references --------------------------------------------------------------------------


def drift_reference(dataset, split: str, pixels: np.ndarray, answers) -> pd.DataFrame:
    """The record FIELDS of one split's photos, as the service would log them: a model's
    reference (saved with it at training time)."""
    from catsdogs.preprocessing import image_statistics

    samples = dataset.select(split)[2]
    rows = []
    for sample, image, answer in zip(samples, pixels, answers, strict=True):
        brightness, saturation = image_statistics(image)
        rows.append({
            "width": sample.width, "height": sample.height, "brightness": brightness,
            "saturation": saturation, "bytes": (dataset.root / sample.path).stat().st_size,
            "label": answer.label, "confidence": answer.confidence,
            "needs_review": answer.needs_review, "novelty_score": answer.novelty_score,
            **{f"embedding_{i:02d}": value for i, value in enumerate(answer.embedding)},
        })  # fmt: skip
    return pd.DataFrame(rows, columns=list(FIELDS))


def reference_path(model_tag: str) -> Path:
    """The reference saved with a model in the BentoML store ($BENTOML_HOME)."""
    import bentoml

    model = bentoml.models.get(model_tag)
    path = Path(model.path_of(REFERENCE_FILE))
    if not path.is_file():
        raise FileNotFoundError(
            f"{model.tag} has no {REFERENCE_FILE} (trained before references were saved?); "
            "give one with --reference"
        )
    return path


def load_reference(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


# --- comparing a window with a reference ------------------------------------------------


@dataclass
class FieldDrift:
    field: str
    method: str
    score: float  # a p-value (drift when below threshold) or a distance (when at or above)
    threshold: float
    detected: bool


@dataclass
class EmbeddingDrift:
    method: str
    score: float
    detected: bool
    columns: int


@dataclass
class ModelDrift:
    model: str
    records: int
    reference: str
    reference_records: int
    fields: list[FieldDrift]
    skipped_fields: dict[str, str]  # field -> why it was not compared
    drift_share: float
    embedding: EmbeddingDrift | None
    threshold: float
    report: Any = field(default=None, repr=False)  # the Evidently snapshot

    @property
    def drifted_fields(self) -> list[str]:
        return [item.field for item in self.fields if item.detected]

    @property
    def detected(self) -> bool:
        embedding = self.embedding is not None and self.embedding.detected
        return embedding or (bool(self.fields) and self.drift_share >= self.threshold)

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "records": self.records,
            "reference": self.reference,
            "reference_records": self.reference_records,
            "detected": self.detected,
            "drift_share": self.drift_share,
            "threshold": self.threshold,
            "drifted_fields": self.drifted_fields,
            "fields": {item.field: _without(asdict(item), "field") for item in self.fields},
            "skipped_fields": self.skipped_fields,
            "embedding": asdict(self.embedding) if self.embedding else None,
        }


def _evidently():
    """Import Evidently (slow: seconds), when a job needs it."""
    import evidently

    return evidently


def embedding_method():
    """Evidently's classifier method: a logistic model learns to tell window from reference
    on half the rows; drift when its ROC AUC on the other half is above EMBEDDING_AUC.

    A fixed bound rather than Evidently's bootstrap of chance (its default below 1,000
    reference rows): on windows of 200 undrifted real photos the bootstrap fired 1 time in 100
    against a reference of 290 rows but 8 in 100 against 1,190, the fixed 0.6 in none of the
    200, while still catching photos darkened by 15% (AUC 0.68).
    """
    _evidently()
    from evidently.metrics.embeddings import ModelDriftMethod

    return ModelDriftMethod(threshold=EMBEDDING_AUC, bootstrap=False)


def comparable_fields(
    window: pd.DataFrame, reference: pd.DataFrame
) -> tuple[dict[str, FieldKind], dict[str, str]]:
    """The FIELDS both sides hold (with at least one value), and why the others are skipped."""
    compared, skipped = {}, {}
    for name, kind in FIELDS.items():
        in_window = name in window and window[name].notna().any()
        in_reference = name in reference and reference[name].notna().any()
        if in_window and in_reference:
            compared[name] = kind
        else:
            sides = {"records": in_window, "reference": in_reference}
            missing = " or the ".join(side for side, present in sides.items() if not present)
            skipped[name] = f"not in the {missing}"
    embeddings = [name for name, kind in compared.items() if kind == "embedding"]
    if 0 < len(embeddings) < EMBEDDING_DIM:  # a partial embedding is no embedding
        for name in embeddings:
            del compared[name]
            skipped[name] = f"only {len(embeddings)} of {EMBEDDING_DIM} embedding columns"
    return compared, skipped


def _prepare(frame: pd.DataFrame, fields: dict[str, FieldKind]) -> pd.DataFrame:
    """The compared columns with one dtype each on both sides: numbers as floats, categories
    as strings (so a parquet bool and a JSON true compare equal)."""
    columns = {}
    for name, kind in fields.items():
        if kind == "categorical":
            values = frame[name]
            columns[name] = values.where(values.isna(), values.astype(str)).astype(object)
        else:
            columns[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
    return pd.DataFrame(columns, index=frame.index).reset_index(drop=True)


def compare(
    window: pd.DataFrame,
    reference: pd.DataFrame,
    *,
    model: str = "",
    reference_name: str = "",
    threshold: float = DEFAULT_THRESHOLD,
    embedding_view: bool = True,
) -> ModelDrift:
    """Evidently on one model's window against its reference.

    embedding_view adds Evidently's EmbeddingsDrift to the report (its t-SNE picture costs a
    few seconds); the embedding verdict comes from the same drift method either way.
    """
    _evidently()
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift
    from evidently.presets import DataDriftPreset

    fields, skipped = comparable_fields(window, reference)
    per_record = [name for name, kind in fields.items() if kind != "embedding"]
    embeddings = [name for name, kind in fields.items() if kind == "embedding"]
    current, ref = _prepare(window, fields), _prepare(reference, fields)
    definition = DataDefinition(
        numerical_columns=[name for name in per_record if fields[name] == "numerical"],
        categorical_columns=[name for name in per_record if fields[name] == "categorical"],
        embeddings={EMBEDDING: embeddings} if embeddings else None,
    )
    method = embedding_method()
    metrics: list = []
    if per_record:
        metrics.append(
            DataDriftPreset(columns=per_record, drift_share=threshold, num_method=NUMERICAL_METHOD)
        )
    if embeddings and embedding_view:
        metrics.append(EmbeddingsDrift(embeddings_name=EMBEDDING, drift_method=method))
    snapshot, embedding = None, None
    with warnings.catch_warnings():
        # A constant column (saturation 0 in grayscale uploads) makes Evidently's plots
        # divide by a zero deviation; the tests themselves are unaffected.
        warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
        if metrics:
            snapshot = Report(metrics, include_tests=True).run(
                Dataset.from_pandas(current, data_definition=definition),
                Dataset.from_pandas(ref, data_definition=definition),
            )
        if embeddings:
            # The method adds a column to what it is given: copies.
            score, detected, name = method(current[embeddings].copy(), ref[embeddings].copy())
            embedding = EmbeddingDrift(name, float(score), bool(detected), len(embeddings))
    field_results = field_drift(snapshot.dict()) if snapshot and per_record else []
    drifted = sum(item.detected for item in field_results)
    return ModelDrift(
        model=model,
        records=len(window),
        reference=reference_name,
        reference_records=len(reference),
        fields=field_results,
        skipped_fields=skipped,
        drift_share=drifted / len(field_results) if field_results else 0.0,
        embedding=embedding,
        threshold=threshold,
        report=snapshot,
    )


def field_drift(snapshot: dict[str, Any]) -> list[FieldDrift]:
    """Per-field results from an Evidently snapshot's dict(): the score, method and threshold
    of each ValueDrift metric, and Evidently's own verdict from its test for that field."""
    verdicts = {
        test["metric_config"]["params"]["column"]: test["status"] != "SUCCESS"
        for test in snapshot["tests"]
        if test["metric_config"]["params"]["type"].endswith(":ValueDrift")
    }
    results = []
    for metric in snapshot["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            column = config["column"]
            score, threshold = float(metric["value"]), float(config["threshold"])
            results.append(FieldDrift(column, config["method"], score, threshold, verdicts[column]))
    return results


def embedding_view_score(model_drift: ModelDrift) -> float | None:
    """The score EmbeddingsDrift put in the report (None without one)."""
    if model_drift.report is None:
        return None
    for metric in model_drift.report.dict()["metrics"]:
        if metric["config"]["type"].endswith(":EmbeddingsDrift"):
            return float(metric["value"])
    return None


# --- the whole job ------------------------------------------------------------------------


@dataclass
class DriftResult:
    folder: str
    window: Window
    files: int
    skipped_lines: int
    records: int  # in the window
    first_record: str | None
    last_record: str | None
    models: list[ModelDrift]
    skipped_models: dict[str, str]  # model -> why it was not compared
    records_by_model: dict[str, int]
    threshold: float
    finished_at: float = field(default_factory=time.time)

    @property
    def detected(self) -> bool:
        return any(model.detected for model in self.models)

    @property
    def verdict(self) -> str:
        if self.detected:
            return "drift"
        return "no_drift" if self.models else "not_enough_data"

    @property
    def exit_code(self) -> int:
        return DRIFT_EXIT_CODE if self.detected else 0

    def summary(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "detected": self.detected,
            "finished_at": datetime.fromtimestamp(self.finished_at).isoformat(),
            "records_folder": self.folder,
            "window": {
                **self.window.describe(),
                "records": self.records,
                "first_record": self.first_record,
                "last_record": self.last_record,
            },
            "files": self.files,
            "skipped_lines": self.skipped_lines,
            "records_by_model": self.records_by_model,
            "threshold": self.threshold,
            "models": [model.summary() for model in self.models],
            "skipped_models": self.skipped_models,
        }


def run_drift(
    folder: Path,
    window: Window = Window(),
    *,
    reference: Path | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    min_records: int = DEFAULT_MIN_RECORDS,
    embedding_view: bool = True,
) -> DriftResult:
    """Read the records, select the window, and compare each model's records with that
    model's reference (`reference` instead, for every model, when given). A model without a
    reference or with fewer than min_records records is skipped and named in the result; when
    none could be compared and some lacked a reference, that is an error (a job that cannot
    find references should fail, not report "no drift")."""
    records = read_records(folder, since=window.since)
    selected = window.select(records.frame)
    if MODEL not in selected:
        selected = selected.assign(**{MODEL: pd.Series(dtype=object)})
    groups = {str(tag): frame for tag, frame in selected.groupby(MODEL, sort=True, dropna=False)}
    compared, skipped = [], {}
    for tag, frame in groups.items():
        if len(frame) < min_records:
            skipped[tag] = f"{len(frame)} records, fewer than {min_records}"
            continue
        try:
            path = reference or reference_path(tag)
        except Exception as error:  # bentoml.exceptions.NotFound, a model without a reference
            skipped[tag] = f"no reference: {error}"
            logger.warning("%s: %s", tag, skipped[tag])
            continue
        logger.info("%s: %d records against %s", tag, len(frame), path)
        compared.append(
            compare(
                frame,
                load_reference(path),
                model=tag,
                reference_name=str(path),
                threshold=threshold,
                embedding_view=embedding_view,
            )
        )
    if groups and not compared and any(r.startswith("no reference") for r in skipped.values()):
        raise FileNotFoundError(
            "no model in the window has a reference: "
            + "; ".join(f"{tag}: {reason}" for tag, reason in skipped.items())
        )
    times = selected[TIMESTAMP]
    return DriftResult(
        folder=str(folder),
        window=window,
        files=len(records.files),
        skipped_lines=records.skipped_lines,
        records=len(selected),
        first_record=times.min().isoformat() if len(times) else None,
        last_record=times.max().isoformat() if len(times) else None,
        models=compared,
        skipped_models=skipped,
        records_by_model={tag: len(frame) for tag, frame in groups.items()},
        threshold=threshold,
    )


# --- outputs ------------------------------------------------------------------------------


def write_outputs(result: DriftResult, out: Path) -> dict[str, Path]:
    """summary.json, and report.html: Evidently's report when one model was compared, else
    an index linking one report-<model>.html per model."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"summary": out / "summary.json", "report": out / "report.html"}
    paths["summary"].write_text(json.dumps(result.summary(), indent=2, default=_json) + "\n")
    with_report = [model for model in result.models if model.report is not None]
    if len(with_report) == 1:
        with_report[0].report.save_html(str(paths["report"]))
        return paths
    rows = []
    for model in with_report:
        name = f"report-{re.sub(r'[^A-Za-z0-9_.-]', '_', model.model)}.html"
        model.report.save_html(str(out / name))
        paths[model.model] = out / name
        verdict = "drift" if model.detected else "no drift"
        rows.append(f'<li><a href="{name}">{model.model}</a>: {verdict}, {model.records} records')
    skipped = [f"<li>{tag}: {reason}</li>" for tag, reason in result.skipped_models.items()]
    paths["report"].write_text(
        "<!doctype html><meta charset=utf-8><title>catsdogs drift</title>"
        f"<h1>catsdogs drift: {result.verdict}</h1><ul>{''.join(rows)}</ul>"
        + (f"<h2>Not compared</h2><ul>{''.join(skipped)}</ul>" if skipped else "")
    )
    return paths


def _field_names(names: Iterable[str]) -> str:
    """Field names for people: the embedding columns, when all are there, as one entry."""
    names = list(names)
    embeddings = [name for name in names if FIELDS.get(name) == "embedding"]
    shown = [name for name in names if name not in embeddings]
    if len(embeddings) == EMBEDDING_DIM:
        shown.append(f"embedding_00..{EMBEDDING_DIM - 1:02d}")
    else:
        shown += embeddings
    return ", ".join(shown)


def _json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def _without(values: dict[str, Any], key: str) -> dict[str, Any]:
    return {name: value for name, value in values.items() if name != key}


def metrics_registry(result: DriftResult):
    """The run as Prometheus gauges, labelled by model (the last-run time per job)."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()

    def gauge(name: str, documentation: str, labels=("model",)) -> Gauge:
        return Gauge(name, documentation, labels, registry=registry)

    detected = gauge("catsdogs_drift_detected", "1 when the model's inputs drifted, else 0.")
    share = gauge("catsdogs_drift_share", "Share of the compared fields whose drift was found.")
    field_score = gauge(
        "catsdogs_drift_field_score",
        "Drift score per field: a p-value (drift below the threshold) or a distance "
        "(drift at or above it), as `method` says.",
        ("model", "field", "method"),
    )
    field_detected = gauge(
        "catsdogs_drift_field_detected", "1 when the field drifted, else 0.", ("model", "field")
    )
    embedding_score = gauge(
        "catsdogs_drift_embedding_score",
        "Embedding drift score (ROC AUC of a classifier telling window from reference).",
    )
    embedding_detected = gauge("catsdogs_drift_embedding_detected", "1 when embeddings drifted.")
    records = gauge("catsdogs_drift_window_records", "Records of the model in the window.")
    last_run = Gauge(
        "catsdogs_drift_last_run_timestamp_seconds",
        "When the drift job last finished a run (Unix time).",
        registry=registry,
    )
    for tag, count in result.records_by_model.items():
        records.labels(model=tag).set(count)
    for model in result.models:
        detected.labels(model=model.model).set(int(model.detected))
        share.labels(model=model.model).set(model.drift_share)
        for item in model.fields:
            field_score.labels(model=model.model, field=item.field, method=item.method).set(
                item.score
            )
            field_detected.labels(model=model.model, field=item.field).set(int(item.detected))
        if model.embedding:
            embedding_score.labels(model=model.model).set(model.embedding.score)
            embedding_detected.labels(model=model.model).set(int(model.embedding.detected))
    last_run.set(result.finished_at)
    return registry


def push_metrics(result: DriftResult, gateway: str, job: str = PUSHGATEWAY_JOB) -> None:
    """Replace this job's group on a Prometheus Pushgateway with this run's gauges."""
    from prometheus_client import push_to_gateway

    push_to_gateway(gateway, job=job, registry=metrics_registry(result), timeout=30)


def write_metrics_file(result: DriftResult, path: Path) -> None:
    """The same gauges in Prometheus' text format (node_exporter's textfile collector)."""
    from prometheus_client import write_to_textfile

    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), metrics_registry(result))


def format_result(result: DriftResult) -> str:
    """A few lines for the terminal."""
    lines = [
        f"verdict: {result.verdict}",
        f"records: {result.records} in the window ({result.first_record} .. "
        f"{result.last_record}), {result.files} file(s), {result.skipped_lines} line(s) "
        "skipped",
    ]
    for model in result.models:
        drifted = ", ".join(model.drifted_fields) or "none"
        lines.append(
            f"{model.model}: {'DRIFT' if model.detected else 'no drift'}; {model.records} "
            f"records; drift share {model.drift_share:.2f} (threshold {model.threshold}); "
            f"drifted fields: {drifted}"
        )
        if model.embedding:
            lines.append(
                f"  embeddings: score {model.embedding.score:.3f} ({model.embedding.method}), "
                f"{'drift' if model.embedding.detected else 'no drift'}"
            )
        if model.skipped_fields:
            lines.append(f"  not compared: {_field_names(model.skipped_fields)}")
    for tag, reason in result.skipped_models.items():
        lines.append(f"{tag}: not compared ({reason})")
    return "\n".join(lines)
