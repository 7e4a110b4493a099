"""Cross-validation of model choices: input size x head x flip, on the same folds for all.

    python benchmarks/crossval.py run ../shared/datasets/catsdogs [--sizes 224,320 --only logreg]
    python benchmarks/crossval.py report --reference "288 logreg"   # the table again, from JSON
    python benchmarks/crossval.py novelty ../shared/datasets/catsdogs   # non-pet photos per size
    python benchmarks/crossval.py recipe ../shared/datasets/catsdogs --size 288   # timed run

Every candidate is scored on the same k folds of the whole data set (folds from each file's
SHA-256, stratified by label). In each round one fold is the test fold, the next one is the
validation fold (early stopping, temperature) and the other k - 2 train, which is the
80/10/10 train/validation/test proportion of `catsdogs train` with k = 10. MobileNetV2
features are computed once per size and flip and cached as .npy (--cache).
Writes --out/crossval.json (every fold of every candidate) and --out/crossval.md (the table).
`novelty` measures the open-world side of each size on the same cached features; `recipe`
times a real `catsdogs train` at one size. Results and the choice: benchmarks/CROSSVAL.md.
"""

import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

app = typer.Typer(add_completion=False, no_args_is_help=True)


@app.callback()
def main() -> None:
    """Cross-validation of model choices (run, report) and a timed real training run (recipe)."""


# ---- folds ---------------------------------------------------------------------------------


def assign_folds(hashes: Sequence[str], labels: Sequence[int], k: int) -> np.ndarray:
    """Fold of each sample, 0..k-1: within each label, samples in SHA-256 order are dealt
    round-robin, so each fold gets the same share of each label (to within one) and the
    assignment depends on the file contents alone, not on their order or names."""
    labels = np.asarray(labels)
    folds = np.empty(len(labels), np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        ordered = members[np.argsort([hashes[i] for i in members], kind="stable")]
        folds[ordered] = np.arange(len(ordered)) % k
    return folds


def fold_parts(folds: np.ndarray, test_fold: int, k: int) -> dict[str, np.ndarray]:
    """Indices of the test fold, the validation fold after it, and the remaining train folds."""
    validation_fold = (test_fold + 1) % k
    return {
        "train": np.flatnonzero((folds != test_fold) & (folds != validation_fold)),
        "validation": np.flatnonzero(folds == validation_fold),
        "test": np.flatnonzero(folds == test_fold),
    }


# ---- features ------------------------------------------------------------------------------


@dataclass
class Data:
    """The data set's labels and hashes, and MobileNetV2 features per (size, flipped)."""

    root: Path
    labels: np.ndarray
    hashes: list[str]
    splits: np.ndarray  # each photo's part of the trainer's content-hash split
    fingerprint: str
    cache: Path
    features: dict[tuple[int, bool], np.ndarray]
    extraction: dict[int, dict[str, float]]  # per size: seconds, images/s (both flips)

    def get(self, size: int, flipped: bool = False) -> np.ndarray:
        if (size, flipped) not in self.features:
            self._extract(size)
        return self.features[size, flipped]

    def _paths(self, size: int) -> dict[str, Path]:
        key = f"mobilenetv2_{size}px_{self.fingerprint[:16]}"
        return {
            "original": self.cache / f"{key}_original.npy",
            "flipped": self.cache / f"{key}_flipped.npy",
            "timing": self.cache / f"{key}_timing.json",
        }

    def _extract(self, size: int) -> None:
        paths = self._paths(size)
        if not all(path.exists() for path in paths.values()):
            compute_features(self, size, paths)
        self.features[size, False] = np.load(paths["original"])
        self.features[size, True] = np.load(paths["flipped"])
        self.extraction[size] = json.loads(paths["timing"].read_text())


def load_data(root: Path, cache: Path) -> Data:
    """Labels, hashes and fingerprint, from the project's loader (features come on demand)."""
    from training.data import load_dataset

    # Decoded at 32 px, the cheapest: only hashes, labels and the fingerprint are kept here.
    dataset = load_dataset(root, 32)
    return Data(
        root=root,
        labels=dataset.labels(),
        hashes=[sample.sha256 for sample in dataset.samples],
        splits=np.array([sample.split for sample in dataset.samples]),
        fingerprint=dataset.fingerprint,
        cache=cache,
        features={},
        extraction={},
    )


def compute_features(data: Data, size: int, paths: dict[str, Path]) -> None:
    """Pooled MobileNetV2 features of every photo and of its mirror image, as `catsdogs train`
    computes them in fast mode (the project's loader, preprocessing and feature extractor)."""
    from training.architectures import build_feature_extractor, build_parts
    from training.config import TrainConfig
    from training.data import load_dataset

    dataset = load_dataset(data.root, size)
    if [sample.sha256 for sample in dataset.samples] != data.hashes:
        raise RuntimeError(f"the photos under {data.root} changed during the run")
    extractor = build_feature_extractor(build_parts(TrainConfig(image_size=size), 2), size)
    started = time.perf_counter()
    original = extractor.predict(dataset.pixels, batch_size=64, verbose=0)
    flipped = extractor.predict(dataset.pixels[:, :, ::-1], batch_size=64, verbose=0)
    seconds = time.perf_counter() - started
    data.cache.mkdir(parents=True, exist_ok=True)
    np.save(paths["original"], original)
    np.save(paths["flipped"], flipped)
    timing = {"seconds": seconds, "images_per_s": 2 * len(original) / seconds}
    paths["timing"].write_text(json.dumps(timing))


# ---- heads on frozen features --------------------------------------------------------------

CURRENT_DEFAULT = "288 logreg"  # what `catsdogs train` fits by default (training/config.py)
# Inverse L2 strengths tried for logistic regression, chosen per fold by inner CV (log loss).
C_GRID = tuple(float(c) for c in np.logspace(-3, 1, 9))
INNER_FOLDS = 5

Linear = tuple[np.ndarray, float]
"""Both heads are linear: features (N, D) @ weights (D,) + offset is the logit of class 1
("dog") against class 0 ("cat")."""


@dataclass(frozen=True)
class Candidate:
    sizes: tuple[int, ...]  # more than one: the features of each size side by side
    head: str  # "keras": the head `catsdogs train` fits now; "logreg": logistic regression
    flip_train: bool = False  # also train on the features of the mirrored photos
    tta: bool = False  # average the logits of each photo and its mirror image
    label_smoothing: float = 0.0  # keras head only
    l2: float = 0.0  # keras head only: L2 factor on the dense kernel

    @property
    def name(self) -> str:
        parts = ["+".join(str(s) for s in self.sizes), self.head]
        parts += [f"ls {self.label_smoothing:g}"] * bool(self.label_smoothing)
        parts += [f"l2 {self.l2:g}"] * bool(self.l2)
        parts += ["flip-train"] * self.flip_train + ["tta"] * self.tta
        return " ".join(parts)

    @property
    def backbone_passes(self) -> list[int]:
        """The sizes of the backbone calls one served photo costs."""
        return list(self.sizes) * (2 if self.tta else 1)


def fit_keras_head(
    candidate: Candidate, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray
) -> tuple[Linear, dict]:
    """The fast-mode head of `catsdogs train` (training.architectures.build_head) with TrainConfig's
    learning rate, batch size, epochs and early stopping on validation loss."""
    import keras

    from training.architectures import build_head
    from training.config import TrainConfig

    config = TrainConfig()
    keras.utils.set_random_seed(config.seed)
    head = build_head(config, 2)
    if candidate.l2:
        # Set before the layer is built: Dense creates its kernel with this regularizer.
        head.layers[-1].kernel_regularizer = keras.regularizers.L2(candidate.l2)
    # The head outputs logits (training/architectures.py), as the trainer's loss expects.
    loss = keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=candidate.label_smoothing
    )
    head.compile(optimizer=keras.optimizers.Adam(config.head_learning_rate), loss=loss)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.early_stopping_patience, restore_best_weights=True
    )
    history = head.fit(
        x,
        np.eye(2)[y],
        validation_data=(x_val, np.eye(2)[y_val]),
        batch_size=config.batch_size,
        epochs=config.head_epochs,
        shuffle=True,
        verbose=0,
        callbacks=[stop],
    )
    kernel, bias = head.layers[-1].get_weights()
    # A two-class softmax is the logistic function of the difference of its two logits.
    return (kernel[:, 1] - kernel[:, 0], float(bias[1] - bias[0])), {"epochs": len(history.epoch)}


def fit_logreg(
    x: np.ndarray, y: np.ndarray, inner_folds: np.ndarray
) -> tuple[Linear, dict, list[Linear]]:
    """L2 logistic regression; its strength is the C_GRID value with the best inner-CV log loss
    (inner folds given, so that a photo and its mirror image always share one). Also returns
    the inner models at that strength, one per inner fold 0, 1, ..., each fitted without it."""
    from sklearn.linear_model import LogisticRegressionCV
    from threadpoolctl import threadpool_limits

    splits = [
        (np.flatnonzero(inner_folds != fold), np.flatnonzero(inner_folds == fold))
        for fold in np.unique(inner_folds)
    ]
    # One BLAS thread: on this shared 2-core machine, two threads that wait on each other made
    # each fit several times slower.
    with threadpool_limits(1):
        model = LogisticRegressionCV(
            Cs=C_GRID,
            cv=splits,
            scoring="neg_log_loss",
            l1_ratios=(0.0,),
            max_iter=10_000,
            use_legacy_attributes=False,
        ).fit(x.astype(np.float64), y)
    linear = (model.coef_[0], float(model.intercept_[0]))
    best = C_GRID.index(float(np.ravel(model.C_)[0]))
    # coefs_paths_: (inner fold, l1 ratio, C, class, features + intercept).
    inner = [(path[0, best, 0, :-1], float(path[0, best, 0, -1])) for path in model.coefs_paths_]
    return linear, {"C": C_GRID[best]}, inner


# ---- scoring -------------------------------------------------------------------------------


def log_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of logistic probabilities, computed from logits (no clipping)."""
    signs = 2 * np.asarray(labels) - 1
    return float(np.mean(np.logaddexp(0.0, -signs * np.asarray(logits, np.float64))))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The trainer's temperature (training/calibration.py, with its prior on log T) for the
    binary logits w.x + b, which are the class logits [0, w.x + b] of the served head."""
    from training.calibration import fit_temperature as fit_class_temperature

    logits = np.asarray(logits, np.float64)
    return fit_class_temperature(np.stack([np.zeros_like(logits), logits], axis=1), labels)


def score_fold(
    test_logits: np.ndarray,
    test_labels: np.ndarray,
    validation_logits: np.ndarray,
    validation_labels: np.ndarray,
    inner_logits: np.ndarray | None = None,
    inner_labels: np.ndarray | None = None,
) -> dict:
    """Test metrics: raw, with the temperature fitted on the validation fold and, given the
    out-of-fold logits of the train photos from an inner CV, with one fitted on those."""

    def wrong(logits: np.ndarray, labels: np.ndarray) -> int:
        return int(np.sum((logits > 0) != (labels == 1)))

    temperature = fit_temperature(validation_logits, validation_labels)
    errors = wrong(test_logits, test_labels)
    scores = {
        "count": len(test_labels),
        "errors": errors,
        "accuracy": 1 - errors / len(test_labels),
        "log_loss": log_loss(test_logits, test_labels),
        "validation_errors": wrong(validation_logits, validation_labels),
        "temperature": temperature,
        "log_loss_scaled": log_loss(test_logits / temperature, test_labels),
    }
    if inner_logits is not None:
        inner_temperature = fit_temperature(inner_logits, inner_labels)
        scores["temperature_inner"] = inner_temperature
        scores["log_loss_scaled_inner"] = log_loss(test_logits / inner_temperature, test_labels)
    return scores


def summarize(rows: list[dict]) -> dict:
    """Mean and sample standard deviation over folds; errors and photos pooled over folds."""

    def mean_sd(name: str) -> tuple[float, float]:
        values = np.array([row[name] for row in rows], np.float64)
        return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0

    summary = {
        "folds": len(rows),
        "errors": sum(r["errors"] for r in rows),
        "count": sum(r["count"] for r in rows),
    }
    summary["pooled_accuracy"] = 1 - summary["errors"] / summary["count"]
    names = ["accuracy", "log_loss", "log_loss_scaled", "temperature", "fit_seconds"]
    names += ["log_loss_scaled_inner", "temperature_inner"] * ("temperature_inner" in rows[0])
    for name in names:
        summary[f"{name}_mean"], summary[f"{name}_sd"] = mean_sd(name)
    # The range shows a collapsed temperature (a validation fold without errors drives T to 0).
    summary["temperature_min"] = min(row["temperature"] for row in rows)
    summary["temperature_max"] = max(row["temperature"] for row in rows)
    return summary


def paired(rows: list[dict], reference: list[dict], name: str) -> tuple[float, float]:
    """Mean and sample sd, over the folds both were scored on, of row - reference in one
    metric: on the same folds, most of the fold-to-fold spread cancels out."""
    by_fold = {row["fold"]: row[name] for row in reference}
    differences = np.array(
        [row[name] - by_fold[row["fold"]] for row in rows if row["fold"] in by_fold]
    )
    sd = float(differences.std(ddof=1)) if len(differences) > 1 else 0.0
    return float(differences.mean()), sd


def evaluate(candidate: Candidate, data: Data, folds: np.ndarray, k: int) -> list[dict]:
    """One row of test metrics per fold: the head fitted on the train folds only."""
    original = np.hstack([data.get(size) for size in candidate.sizes])
    mirrored = np.hstack([data.get(size, flipped=True) for size in candidate.sizes])
    labels = data.labels

    def logits(index: np.ndarray, linear: Linear) -> np.ndarray:
        # With TTA, the mean logit of photo and mirror image: for a linear head, the same as
        # the head on the mean of the two feature vectors.
        features = (original[index] + mirrored[index]) / 2 if candidate.tta else original[index]
        return features @ linear[0] + linear[1]

    rows = []
    for test_fold in range(k):
        parts = fold_parts(folds, test_fold, k)
        train, validation, test = parts["train"], parts["validation"], parts["test"]
        x, y = original[train], labels[train]
        inner = assign_folds([data.hashes[i] for i in train], y, INNER_FOLDS)
        inner_of_rows = inner
        if candidate.flip_train:  # a mirror image goes into its photo's inner fold
            x, y = np.vstack([x, mirrored[train]]), np.concatenate([y, y])
            inner_of_rows = np.concatenate([inner, inner])
        started = time.perf_counter()
        inner_logits = None
        if candidate.head == "logreg":
            linear, info, inner_linears = fit_logreg(x, y, inner_of_rows)
            # Out-of-fold logits of the train photos: each from the inner model without it.
            inner_logits = np.empty(len(train))
            for fold, inner_linear in enumerate(inner_linears):
                inner_logits[inner == fold] = logits(train[inner == fold], inner_linear)
        else:
            linear, info = fit_keras_head(candidate, x, y, original[validation], labels[validation])
        seconds = time.perf_counter() - started
        scores = score_fold(
            logits(test, linear), labels[test],
            logits(validation, linear), labels[validation],
            inner_logits, labels[train],
        )  # fmt: skip
        rows.append({"fold": test_fold, **scores, "fit_seconds": seconds, **info})
    return rows


# ---- candidates, speed, report -------------------------------------------------------------


def candidates(sizes: Sequence[int], pairs: Sequence[tuple[int, ...]]) -> list[Candidate]:
    """Per size: the Keras head (plain, label smoothing, L2) and logistic regression (plain,
    with mirrored training photos, with flip TTA, both); per pair of sizes: logistic regression
    on both sets of features side by side, plain and with both flips."""
    result = []
    for size in sizes:
        one = (size,)
        result += [
            Candidate(one, "keras"),
            Candidate(one, "keras", label_smoothing=0.1),
            Candidate(one, "keras", l2=1e-3),
            Candidate(one, "logreg"),
            Candidate(one, "logreg", flip_train=True),
            Candidate(one, "logreg", tta=True),
            Candidate(one, "logreg", flip_train=True, tta=True),
        ]
    for pair in pairs:
        result += [Candidate(pair, "logreg"), Candidate(pair, "logreg", flip_train=True, tta=True)]
    return result


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }


def model_ms_per_image(sizes: Sequence[int], cache: Path, batch: int = 32) -> dict[int, float]:
    """The served model (backbone and head, exported as `catsdogs train` exports it) on ONNX
    Runtime fp32: best of 5 timed calls on a batch of random images, per photo."""
    import onnxruntime as ort

    from training.architectures import build_inference_model, build_parts
    from training.config import TrainConfig
    from training.export import export_onnx

    result = {}
    for size in sizes:
        path = cache / f"model_{size}px.onnx"
        if not path.exists():
            cache.mkdir(parents=True, exist_ok=True)
            parts = build_parts(TrainConfig(image_size=size), 2)
            export_onnx(build_inference_model(parts, size, 1.0), path, size)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), np.uint8)
        feed = {session.get_inputs()[0].name: images}
        session.run(None, feed)  # warm-up
        times = []
        for _ in range(5):
            started = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - started)
        result[size] = 1000 * min(times) / batch
    return result


def pm(summary: dict, name: str, digits: int = 4) -> str:
    return f"{summary[f'{name}_mean']:.{digits}f} ± {summary[f'{name}_sd']:.{digits}f}"


def markdown(report: dict, reference: str) -> str:
    """The report as markdown: one row per candidate, then feature extraction speed per size."""
    by_name = {row["name"]: row for row in report["candidates"]}
    base = by_name.get(reference)
    machine_info = report["machine"]
    start, end = machine_info["load_average_at_start"][0], machine_info["load_average_at_end"][0]
    lines = [
        f"# Cross-validation: {report['data']['photos']} photos, {report['k']} folds",
        "",
        f"{report['date']}; `{report['command']}`; {machine_info['cpu']}, "
        f"{machine_info['cores']} cores, load average "
        f"{start:.1f} at the start and {end:.1f} at the end; data "
        f"fingerprint `{report['data']['fingerprint'][:16]}`.",
        "",
        "Each fold is the test fold once; the fold after it is the validation fold (early "
        "stopping of the Keras heads; the temperature, fitted as `catsdogs train` fits it); the "
        "other folds train. Mean ± sample sd over folds; errors pooled over the test folds. "
        "T on inner CV: the temperature fitted on the out-of-fold logits of the train photos "
        "from the inner CV that chose C (logistic regression only). Model ms: the whole model "
        "on ONNX Runtime fp32, batch 32, per photo (two backbone passes with TTA, one per size "
        f"when sizes are combined). Δ: the paired difference from **{reference}** on the same "
        "folds, mean ± sd per fold (negative: fewer errors, lower log loss).",
        "",
        "| candidate | folds | accuracy | errors | log loss raw | log loss, T on validation "
        "| T on validation (min-max) | log loss, T on inner CV | Δ errors per fold | Δ log loss "
        "| head fit s/fold | model ms/photo |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report["candidates"]:
        s = row["summary"]
        inner = pm(s, "log_loss_scaled_inner") if "log_loss_scaled_inner_mean" in s else "-"
        delta_errors = delta_loss = "-"
        if base is not None:
            mean, sd = paired(row["folds"], base["folds"], "errors")
            delta_errors = f"{mean:+.1f} ± {sd:.1f}"
            mean, sd = paired(row["folds"], base["folds"], "log_loss_scaled")
            delta_loss = f"{mean:+.4f} ± {sd:.4f}"
        lines.append(
            f"| {row['name']} | {s['folds']} | {pm(s, 'accuracy')} | {s['errors']} / {s['count']} "
            f"| {pm(s, 'log_loss')} | {pm(s, 'log_loss_scaled')} "
            f"| {s['temperature_min']:.2f}-{s['temperature_max']:.2f} | {inner} "
            f"| {delta_errors} | {delta_loss} | {s['fit_seconds_mean']:.1f} "
            f"| {row['model_ms_per_image']:.2f} |"
        )
    lines += [
        "",
        "| size | feature extraction, photos/s (Keras, batch 64, photo and mirror) "
        "| model ms/photo (ONNX Runtime fp32, batch 32) |",
        "| ---: | ---: | ---: |",
    ]
    for size, timing in sorted(report["extraction"].items(), key=lambda item: int(item[0])):
        ms = report["model_ms_per_image"][str(size)]
        lines.append(f"| {size} | {timing['images_per_s']:.1f} | {ms:.2f} |")
    return "\n".join(lines) + "\n"


DataDir = Annotated[Path, typer.Argument(help="Folder of labelled photos.")]
Cache = Annotated[Path, typer.Option(help="Features and ONNX files (shared by the commands).")]
DEFAULT_CACHE = Path("reports/crossval/cache")


@app.command()
def run(
    data_dir: DataDir,
    out: Annotated[Path, typer.Option(help="Where the reports go.")] = Path("reports/crossval"),
    cache: Cache = DEFAULT_CACHE,
    k: Annotated[int, typer.Option(min=3, help="Number of folds.")] = 10,
    sizes: Annotated[str, typer.Option(help="Input sizes, comma-separated.")] = (
        "224,256,288,320,352,384"
    ),
    concat: Annotated[str, typer.Option(help="Size pairs to concatenate, e.g. 224+320.")] = (
        "224+320,288+384"
    ),
    only: Annotated[str, typer.Option(help="Only candidates whose name contains this.")] = "",
    reference: Annotated[str, typer.Option(help="Candidate the others are compared with.")] = (
        CURRENT_DEFAULT
    ),
) -> None:
    """Score every candidate on the same folds; write OUT/crossval.json and OUT/crossval.md."""
    import shlex
    import sys

    size_list = [int(size) for size in sizes.split(",")]
    pairs = [tuple(int(s) for s in pair.split("+")) for pair in concat.split(",") if pair]
    report = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["python", "benchmarks/crossval.py", *sys.argv[1:]]),
        "machine": machine(),
        "k": k,
    }
    data = load_data(data_dir, cache)
    folds = assign_folds(data.hashes, data.labels, k)
    report["data"] = {"root": str(data_dir), "photos": len(data.labels),
                      "fingerprint": data.fingerprint}  # fmt: skip
    for size in sorted({s for pair in pairs for s in pair} | set(size_list)):
        data.get(size)
    ms = model_ms_per_image(sorted(data.extraction), cache)
    report["extraction"] = {str(size): timing for size, timing in data.extraction.items()}
    report["model_ms_per_image"] = {str(size): value for size, value in ms.items()}
    report["candidates"] = []
    for candidate in candidates(size_list, pairs):
        if only not in candidate.name:
            continue
        rows = evaluate(candidate, data, folds, k)
        row = {
            "name": candidate.name,
            "sizes": list(candidate.sizes),
            "summary": summarize(rows),
            "folds": rows,
            "model_ms_per_image": sum(ms[s] for s in candidate.backbone_passes),
        }
        report["candidates"].append(row)
        s = row["summary"]
        summary = f"log loss {pm(s, 'log_loss')} / T {pm(s, 'log_loss_scaled')}"
        print(f"{candidate.name:<32} {pm(s, 'accuracy')}  errors {s['errors']:>3}  {summary}")
    report["machine"]["load_average_at_end"] = os.getloadavg()
    out.mkdir(parents=True, exist_ok=True)
    (out / "crossval.json").write_text(json.dumps(report, indent=1))
    (out / "crossval.md").write_text(markdown(report, reference))
    print(markdown(report, reference))


@app.command()
def report(
    out: Annotated[Path, typer.Option(help="Folder of crossval.json.")] = Path("reports/crossval"),
    reference: Annotated[str, typer.Option(help="Candidate the others are compared with.")] = (
        CURRENT_DEFAULT
    ),
) -> None:
    """Print (and rewrite) OUT/crossval.md from OUT/crossval.json."""
    text = markdown(json.loads((out / "crossval.json").read_text()), reference)
    (out / "crossval.md").write_text(text)
    print(text)


@app.command()
def novelty(
    data_dir: DataDir,
    others: Annotated[Path, typer.Option(help="Photos with no cat or dog.")] = Path("data/nonpet"),
    cache: Cache = DEFAULT_CACHE,
    sizes: Annotated[str, typer.Option(help="Input sizes, comma-separated.")] = "224,256,288,320",
    quantile: Annotated[float, typer.Option(help="As TrainConfig.novelty_quantile.")] = 0.995,
    k: Annotated[int, typer.Option(help="As TrainConfig.novelty_k.")] = 10,
) -> None:
    """The open-world side of each input size: the trainer's kNN detector (training split as
    reference, threshold from the validation and leave-one-out training scores, cat and dog
    photos only) on the content-hash split, then the share of test photos called other and
    of OTHERS caught. OTHERS only ever measure; nothing is fitted on them."""
    from catsdogs.novelty import KnnNovelty, threshold_for
    from catsdogs.preprocessing import read_image
    from training.architectures import build_feature_extractor, build_parts
    from training.config import TrainConfig

    data = load_data(data_dir, cache)
    part = {
        split: np.flatnonzero(data.splits == split) for split in ("train", "validation", "test")
    }
    paths = sorted(path for path in others.iterdir() if path.suffix.lower() in {".jpg", ".png"})
    print("| size | test called other | non-pet caught |\n| ---: | ---: | ---: |")
    for size in (int(value) for value in sizes.split(",")):
        features = data.get(size)
        extractor = build_feature_extractor(build_parts(TrainConfig(image_size=size), 2), size)
        outside = extractor.predict(
            np.stack([read_image(p, size).pixels for p in paths]), verbose=0
        )
        knn = KnnNovelty.fit(features[part["train"]], k)
        held_out = np.concatenate([knn.scores(features[part["validation"]]),
                                   knn.leave_one_out_scores()])  # fmt: skip
        threshold = threshold_for(held_out, quantile)
        test = knn.scores(features[part["test"]]) > threshold
        caught = knn.scores(outside) > threshold
        print(f"| {size} | {test.mean():.1%} ({test.sum()} of {len(test)}) "
              f"| {caught.mean():.1%} ({caught.sum()} of {len(caught)}) |", flush=True)  # fmt: skip


@app.command()
def recipe(
    data_dir: DataDir,
    size: Annotated[int, typer.Option(help="Input size, pixels.")] = 320,
    out: Annotated[Path, typer.Option(help="Where recipe_SIZE.json goes.")] = Path(
        "reports/crossval"
    ),
) -> None:
    """A real `catsdogs train DATA --image-size SIZE` on the defaults otherwise, timed end to
    end: the project's own pipeline (load, features, head, calibration, open-world thresholds,
    test evaluation, ONNX export and parity check, int8 copy and gate, non-pet photos, model
    card, MLflow, BentoML), into a throwaway MLflow store and BentoML home."""
    import shutil
    import tempfile

    started, host = time.perf_counter(), machine()
    data_dir, out = data_dir.resolve(), out.resolve()
    state, previous = Path(tempfile.mkdtemp(prefix="catsdogs-recipe-")), Path.cwd()
    # Before bentoml and mlflow are imported: they read these once.
    os.environ["BENTOML_HOME"] = str(state / "bentoml")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{state}/mlflow.db"
    os.chdir(state)  # MLflow writes artifacts under ./mlruns
    from training import train as project_training
    from training.config import TrainConfig

    result = project_training.train(TrainConfig(data_dir=data_dir, image_size=size))
    seconds = time.perf_counter() - started
    os.chdir(previous)
    shutil.rmtree(state)
    report = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "size": size,
        "wall_seconds": seconds,
        "timings": result.timings,
        "test_metrics": result.test_metrics,
        "machine": {**host, "load_average_at_end": os.getloadavg()},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"recipe_{size}.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    app()
