"""Train the cats-vs-dogs classifier, top to bottom.

    data -> backbone + head -> (fast | finetune | scratch) training -> temperature scaling on
    held-out logits -> the inference model (calibrated probabilities + embedding)
    -> novelty detector and review threshold -> test evaluation (with confidence intervals
    and slices) -> ONNX export checked against Keras -> int8 copy and its gate
    -> the non-pet photos measured -> model card -> MLflow + BentoML

Every run is an MLflow run: the whole resolved TrainConfig, the split manifest with its
fingerprint, per-epoch metrics, phase timings, calibration and open-world metrics, test
metrics and plots, and the model (registered as `catsdogs`, also saved to the BentoML store
with its ONNX export, OpenWorld and model card; each records the other's id). The model card
is written from the metrics as logged (LoggedMetrics), so its numbers are the run's.
"""

import functools
import logging
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import keras
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import tensorflow as tf

from catsdogs.answers import OTHER, OpenWorld, Projection, review_threshold_for
from catsdogs.classifier import Classifier, ModelOutput, onnx_infer
from catsdogs.config import INT8_ONNX_FILE_NAME, ONNX_FILE_NAME, ONNX_TOLERANCE
from catsdogs.errors import RefusedInput
from catsdogs.novelty import KnnNovelty, MahalanobisNovelty, threshold_for
from catsdogs.preprocessing import read_image
from training import evaluate
from training.architectures import (
    ModelParts,
    build_feature_extractor,
    build_inference_model,
    build_parts,
    build_training_model,
    unfreeze_top,
)
from training.calibration import (
    calibrated,
    expected_calibration_error,
    fit_temperature,
    log_loss,
)
from training.config import TrainConfig
from training.data import Dataset, load_dataset
from training.drift import REFERENCE_FILE, drift_reference
from training.export import check_onnx_parity, export_onnx
from training.heads import fit_logistic_head
from training.keras_classifier import OPEN_WORLD_ARTIFACTS, keras_infer
from training.model_card import CardFacts, write_model_card
from training.progress import SILENT, Progress
from training.quantize import (
    MAX_ACCURACY_DROP,
    MAX_LOG_LOSS_RISE,
    MIN_GATE_PHOTOS,
    MIN_SAME_LABEL,
    check_gate,
    quantize_int8,
)
from training.tracking import (
    EpochMetricsLogger,
    KerasProgress,
    LoggedMetrics,
    RegisteredModel,
    log_dataset,
    log_environment,
    register_model,
)

logger = logging.getLogger(__name__)

PHASE_NAMES = {
    "head": "the classifier head",
    "finetune": "the top of the backbone (fine-tuning)",
    "train": "the CNN from random weights",
}
SPLITS = ("train", "validation", "test")
MODEL_CARD_ARTIFACTS = "model_card"
NONPET_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    test_metrics: dict[str, float]
    registered: RegisteredModel
    timings: dict[str, float]
    open_world: OpenWorld


def train(config: TrainConfig, progress: Progress = SILENT) -> TrainResult:
    # One seed for Python, NumPy and TensorFlow; deterministic kernels where TF has a choice.
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()

    with progress.phase(f"Read and check the photos in {config.data_dir}"):
        dataset = load_dataset(
            config.data_dir,
            config.image_size,
            validation_fraction=config.validation_fraction,
            test_fraction=config.test_fraction,
        )
        _check_splits(dataset)
    progress.done(_describe(dataset))
    pixels, labels = {}, {}
    for split in SPLITS:
        pixels[split], labels[split], _ = dataset.select(split)
    test_samples = dataset.select("test")[2]
    test_names = [sample.path for sample in test_samples]
    test_sizes = np.array([(sample.width, sample.height) for sample in test_samples])

    mlflow.set_experiment(config.experiment)
    with mlflow.start_run() as run, tempfile.TemporaryDirectory() as scratch:
        mlflow.log_params(config.model_dump(mode="json"))
        mlflow.log_dict(config.model_dump(mode="json"), "config.json")
        log_environment()
        logged = LoggedMetrics()  # every metric of the run, as logged: the model card's source
        log_dataset(dataset, Path(scratch) / "data", logged)

        # 1. Train the backbone and head (only the head in fast mode).
        timings: dict[str, float] = {}
        parts = build_parts(config, len(dataset.class_names))
        fit = functools.partial(_fit, config=config, timings=timings, progress=progress)
        images = {split: (pixels[split], labels[split]) for split in ("train", "validation")}
        # Held-out logits and labels for the temperature: the validation split's, unless the
        # head comes with more (below).
        held_out_logits: tuple[np.ndarray, np.ndarray] | None = None
        if config.mode == "fast":
            # Backbone features once per image; then only the small head trains, on them.
            embeddings = _embed(parts, config, pixels, ("train", "validation"), timings, progress)
            if config.head == "logreg":
                with progress.phase("Fit the classifier head (logistic regression)"):
                    logistic = fit_logistic_head(parts.head, embeddings["train"], labels["train"])
                logged.log({"head_c": logistic.c})
                # Every training photo's logits from the inner model without it: thousands of
                # held-out photos pin T down where a few hundred validation photos cannot
                # (benchmarks/CROSSVAL.md, "T on inner CV").
                held_out_logits = (logistic.out_of_fold_logits, labels["train"])
            else:
                features = {split: (embeddings[split], labels[split]) for split in embeddings}
                fit(parts.head, "head", config.head_learning_rate, config.head_epochs, **features)
        else:
            model = build_training_model(parts, config)
            if config.mode == "scratch":
                fit(model, "train", config.head_learning_rate, config.head_epochs, **images)
            else:
                parts.backbone.trainable = False
                epochs = fit(model, "head", config.head_learning_rate, config.head_epochs,
                             **images)  # fmt: skip
                if config.finetune_epochs:
                    unfreeze_top(parts.backbone, config.finetune_layers)
                    fit(model, "finetune", config.finetune_learning_rate,
                        config.finetune_epochs, first_step=epochs, **images)  # fmt: skip
            embeddings = _embed(parts, config, pixels, ("train", "validation"), timings, progress)
        logged.log(timings)

        # 2. Calibrate: one temperature for the logits, fitted on held-out photos.
        validation_logits = parts.head.predict(embeddings["validation"], verbose=0)
        held_out_logits = held_out_logits or (validation_logits, labels["validation"])
        temperature = fit_temperature(*held_out_logits)
        model = build_inference_model(parts, config.image_size, temperature)
        validation = ModelOutput(calibrated(validation_logits, temperature),
                                 embeddings["validation"])  # fmt: skip
        with progress.phase(f"Evaluate on the {len(labels['test'])} test photos"):
            # Through the same compiled path and outputs that serving uses.
            test = _classifier(model, dataset, config).predict_pixels(pixels["test"])
        uncalibrated = calibrated(validation_logits, 1.0)
        calibration = {"temperature": temperature, "temperature_photos": len(held_out_logits[1])}
        # log(p) x T are the test logits up to a constant per row: softmax gives them back
        # uncalibrated.
        test_uncalibrated = calibrated(
            np.log(np.clip(test.probabilities, 1e-12, 1)), 1 / temperature
        )
        for split, before, after in (
            ("validation", uncalibrated, validation.probabilities),
            ("test", test_uncalibrated, test.probabilities),
        ):
            calibration[f"{split}_ece_before"] = expected_calibration_error(before, labels[split])
            calibration[f"{split}_ece"] = expected_calibration_error(after, labels[split])
            calibration[f"{split}_log_loss_before"] = log_loss(labels[split], before)
            calibration[f"{split}_log_loss"] = log_loss(labels[split], after)
        logged.log(calibration, "calibration_")

        # 3. Open-world answers: a novelty detector and a review threshold, calibrated on cat
        # and dog photos only (training photos as the reference, validation for thresholds).
        open_world, novelty_metrics = _fit_open_world(
            config, embeddings["train"], labels["train"], validation, labels["validation"], test
        )
        logged.log(novelty_metrics)
        answers = open_world.answer(test.probabilities, test.embeddings, dataset.class_names)
        test_metrics = evaluate.compute_metrics(labels["test"], test.probabilities)
        test_metrics |= evaluate.open_world_metrics(answers)
        test_metrics["ece"] = calibration["test_ece"]
        logged.log(test_metrics, "test_")
        # 95 % intervals, the confusion matrix and accuracy by slice (small, dark, grayscale).
        logged.log(
            {
                **evaluate.interval_metrics(labels["test"], test.probabilities, config.seed),
                **evaluate.open_world_intervals(answers),
                **evaluate.confusion_counts(labels["test"], test.probabilities,
                                            dataset.class_names),
                **evaluate.slice_metrics(labels["test"], test.probabilities,
                                         evaluate.slice_masks(pixels["test"], test_sizes)),
            },
            "test_",
        )  # fmt: skip
        _log_plots(dataset, pixels["test"], labels["test"], test, test_names)

        with progress.phase("Export to ONNX and check it against Keras on the test photos"):
            # Serving runs the ONNX export: it must give the test split the same outputs.
            onnx_path = export_onnx(model, Path(scratch) / ONNX_FILE_NAME, config.image_size)
            onnx_difference = check_onnx_parity(test, onnx_path, pixels["test"])
            logged.log({"onnx_max_abs_diff": onnx_difference, "onnx_tolerance": ONNX_TOLERANCE})
        progress.done(f"largest probability difference {onnx_difference:.1e}")

        # 4. The int8 copy that serving runs by default: gated against fp32 on the test split,
        # with its own novelty threshold and review threshold (from its own outputs).
        int8 = _int8_copy(config, dataset, onnx_path, pixels, labels, test, Path(scratch),
                          logged, progress)  # fmt: skip

        # 5. Photos with no cat or dog, only ever measured: the share each precision calls
        # "other", through the ONNX copies that serving runs.
        nonpet = _nonpet_pixels(config.nonpet_dir, config.image_size)
        if nonpet is not None:
            with progress.phase(f"Measure the {len(nonpet)} non-pet photos in {config.nonpet_dir}"):
                runs = {"": (_onnx_classifier(onnx_path, dataset, config, "fp32"), open_world)}
                if int8:
                    runs["int8_"] = (int8.classifier, int8.open_world)
                logged.log(_nonpet_metrics(nonpet, runs, dataset.class_names))
            progress.done(
                "called other: "
                + ", ".join(f"{prefix[:-1] or 'fp32'} {logged[f'{prefix}nonpet_other_rate']:.1%}"
                            for prefix in runs)
            )  # fmt: skip

        metadata = {
            "class_names": list(dataset.class_names),
            "image_size": config.image_size,
            "mode": config.mode,
            "dataset_fingerprint": dataset.fingerprint,
            "onnx_max_abs_diff": onnx_difference,
            "calibration": calibration,
            "open_world": {"fp32": open_world.describe()},
            "int8_gate": int8.metrics if int8 else {"skipped": _no_int8_reason(labels["test"])},
        }
        # What `catsdogs drift` compares prediction records with: the same fields, computed
        # the same way, for the validation photos.
        reference = Path(scratch) / REFERENCE_FILE
        validation_answers = open_world.answer(
            validation.probabilities, validation.embeddings, dataset.class_names
        )
        drift_reference(dataset, "validation", pixels["validation"], validation_answers).to_parquet(
            reference
        )
        files = {ONNX_FILE_NAME: (onnx_path, "onnx"), REFERENCE_FILE: (reference, "drift")}
        saved = [open_world.save(Path(scratch) / "open_world", "fp32")]
        if int8:
            metadata["open_world"]["int8"] = int8.open_world.describe()
            files[INT8_ONNX_FILE_NAME] = (int8.path, "onnx")
            saved.append(int8.open_world.save(Path(scratch) / "open_world", "int8"))
        for path in (*saved, *(path.with_suffix(".json") for path in saved)):
            files[path.name] = (path, OPEN_WORLD_ARTIFACTS)

        # 6. The model card: every number from `logged`; it names the model, so it is written
        # once the BentoML tag and the MLflow version exist (inside register_model).
        reliability = evaluate.plot_reliability(labels["test"], test.probabilities)

        def model_card(bento_tag: str, mlflow_version: str) -> dict[str, tuple[Path, str]]:
            facts = CardFacts(
                bento_tag=bento_tag,
                mlflow_run_id=run.info.run_id,
                mlflow_model_version=mlflow_version,
                trained_at=datetime.fromtimestamp(run.info.start_time / 1000, UTC).strftime(
                    "%Y-%m-%d %H:%M UTC"
                ),
                config=config,
                dataset_fingerprint=dataset.fingerprint,
                class_names=tuple(dataset.class_names),
                metrics=logged,
                int8_skipped=metadata["int8_gate"].get("skipped"),
            )
            paths = write_model_card(facts, reliability, Path(scratch) / MODEL_CARD_ARTIFACTS)
            return {name: (path, MODEL_CARD_ARTIFACTS) for name, path in paths.items()}

        with progress.phase("Log the model to MLflow and save it to the BentoML store"):
            registered = register_model(
                model,
                files=files,
                registered_name=config.registered_model,
                example=pixels["test"][:1],
                example_output={
                    "probabilities": test.probabilities[:1],
                    "embedding": test.embeddings[:1],
                },
                metadata=metadata,
                test_metrics=test_metrics,
                force_champion=config.force_champion,
                named_files=model_card,
            )
        plt.close(reliability)
    return TrainResult(run.info.run_id, test_metrics, registered, timings, open_world)


def _embed(
    parts: ModelParts,
    config: TrainConfig,
    pixels: dict[str, np.ndarray],
    splits: tuple[str, ...],
    timings: dict[str, float],
    progress: Progress,
) -> dict[str, np.ndarray]:
    """The backbone's embedding of every image of the given splits."""
    started = time.perf_counter()
    extractor = build_feature_extractor(parts, config.image_size)
    count = sum(len(pixels[split]) for split in splits)
    with (
        progress.phase(f"Compute backbone features of {count} photos"),
        progress.bar("features", count) as advance,
    ):
        embeddings = {
            split: extractor.predict(
                pixels[split], batch_size=64, verbose=0, callbacks=[KerasProgress(advance)]
            )
            for split in splits
        }
    _record(timings, "features", time.perf_counter() - started, count)
    return embeddings


@dataclass(frozen=True)
class Int8Copy:
    path: Path
    classifier: Classifier
    open_world: OpenWorld
    metrics: dict[str, float]


def _int8_copy(
    config: TrainConfig,
    dataset: Dataset,
    onnx_path: Path,
    pixels: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    test: ModelOutput,
    scratch: Path,
    logged: LoggedMetrics,
    progress: Progress,
) -> Int8Copy | None:
    """The int8 model, its gate's numbers (raises QuantizationGateError when it fails) and
    its OpenWorld; None when the test split is too small for the gate to judge."""
    if len(labels["test"]) < MIN_GATE_PHOTOS:
        progress.done(f"no int8 copy: {_no_int8_reason(labels['test'])}")
        mlflow.set_tag("int8", f"skipped: {_no_int8_reason(labels['test'])}")
        return None
    with progress.phase("Quantize to int8 and gate it against fp32 on the test photos"):
        calibration = _calibration_photos(pixels["train"], config.quantization_photos)
        path = quantize_int8(onnx_path, scratch / INT8_ONNX_FILE_NAME, calibration)
        int8 = _onnx_classifier(path, dataset, config, "int8")
        outputs = {split: int8.predict_pixels(pixels[split]) for split in SPLITS}
        gate = check_gate(test, outputs["test"], labels["test"])
        open_world, novelty = _fit_open_world(
            config, outputs["train"].embeddings, labels["train"], outputs["validation"],
            labels["validation"], outputs["test"],
        )  # fmt: skip
        answers = open_world.answer(outputs["test"].probabilities, outputs["test"].embeddings,
                                    dataset.class_names)  # fmt: skip
        metrics = {
            **gate.metrics(),
            **evaluate.open_world_metrics(answers),
            "ece": expected_calibration_error(outputs["test"].probabilities, labels["test"]),
            **novelty,
            "gate_min_same_label": MIN_SAME_LABEL,
            "gate_max_accuracy_drop": MAX_ACCURACY_DROP,
            "gate_max_log_loss_rise": MAX_LOG_LOSS_RISE,
        }
        logged.log(metrics, "int8_")
    progress.done(
        f"same label as fp32 on {gate.same_label:.1%} of the test photos; accuracy "
        f"{gate.accuracy_int8:.4f} (fp32 {gate.accuracy_fp32:.4f})"
    )
    return Int8Copy(path, int8, open_world, metrics)


def _no_int8_reason(test_labels: np.ndarray) -> str:
    return (
        f"{len(test_labels)} test photos; the int8 gate needs {MIN_GATE_PHOTOS} (one changed "
        f"label must stay within its {MIN_SAME_LABEL:.1%} bar): serving runs fp32"
    )


def _calibration_photos(train_pixels: np.ndarray, count: int) -> np.ndarray:
    """count training photos spread evenly over the split (deterministic)."""
    step = max(1, len(train_pixels) // count)
    return train_pixels[::step][:count]


def _nonpet_pixels(folder: Path | None, image_size: int) -> np.ndarray | None:
    """The prepared photos of the non-pet folder; None when there is none (or no photos)."""
    if folder is None or not folder.is_dir():
        logger.info("no non-pet photos measured: %s is not a folder", folder)
        return None
    pixels = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in NONPET_SUFFIXES):
        try:
            pixels.append(read_image(path, image_size).pixels)
        except RefusedInput as refusal:
            logger.warning("non-pet photo %s skipped: %s", path, refusal)
    return np.stack(pixels) if pixels else None


def _nonpet_metrics(
    pixels: np.ndarray,
    runs: dict[str, tuple[Classifier, OpenWorld]],
    class_names: tuple[str, ...],
) -> dict[str, float]:
    """nonpet_count, and per precision (its metric prefix) the share of the photos called
    other with its Wilson interval."""
    metrics: dict[str, float] = {"nonpet_count": len(pixels)}
    for prefix, (classifier, open_world) in runs.items():
        output = classifier.predict_pixels(pixels)
        answers = open_world.answer(output.probabilities, output.embeddings, class_names)
        metrics |= evaluate.proportion(f"{prefix}nonpet_other_rate",
                                       [answer.label == OTHER for answer in answers])  # fmt: skip
    return metrics


def _classifier(model: keras.Model, dataset: Dataset, config: TrainConfig) -> Classifier:
    return Classifier(keras_infer(model, config.image_size), dataset.class_names,
                      config.image_size, "training", runtime="keras")  # fmt: skip


def _onnx_classifier(
    path: Path, dataset: Dataset, config: TrainConfig, precision: str
) -> Classifier:
    return Classifier(onnx_infer(path), dataset.class_names, config.image_size, precision,
                      runtime="onnx")  # fmt: skip


def _fit_open_world(
    config: TrainConfig,
    train_embeddings: np.ndarray,
    train_labels: np.ndarray,
    validation: ModelOutput,
    validation_labels: np.ndarray,
    test: ModelOutput,
) -> tuple[OpenWorld, dict[str, float]]:
    """The kNN detector the service runs, thresholded on held-out cat and dog photos; the
    review threshold from validation answers; and, for comparison, a Mahalanobis detector.

    Held-out scores: the validation photos', and, where the backbone stayed frozen (fast
    mode: the training photos' embeddings are then as unseen as any), every training photo
    scored against the others. A few hundred validation photos alone put the tail quantile
    a photo or two either way; thousands pin it down."""
    knn = KnnNovelty.fit(train_embeddings, config.novelty_k)
    held_out = knn.scores(validation.embeddings)
    if config.mode == "fast":
        held_out = np.concatenate([held_out, knn.leave_one_out_scores()])
    knn = knn.with_threshold(threshold_for(held_out, config.novelty_quantile))
    mahalanobis = MahalanobisNovelty.fit(train_embeddings, train_labels)
    mahalanobis = mahalanobis.with_threshold(
        threshold_for(mahalanobis.scores(validation.embeddings), config.novelty_quantile)
    )
    kept = knn.scores(validation.embeddings) <= knn.threshold
    review = review_threshold_for(validation.probabilities, validation_labels, kept,
                                  config.review_target)  # fmt: skip
    metrics = {
        "novelty_threshold": knn.threshold,
        "review_threshold": review,
        "novelty_test_other_rate_knn": float(np.mean(knn.scores(test.embeddings) > knn.threshold)),
        "novelty_test_other_rate_mahalanobis": float(
            np.mean(mahalanobis.scores(test.embeddings) > mahalanobis.threshold)
        ),
    }
    return OpenWorld(knn, review, Projection.fit(train_embeddings)), metrics


def _fit(
    model: keras.Model,
    phase: str,
    learning_rate: float,
    epochs: int,
    *,
    config: TrainConfig,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    timings: dict[str, float],
    progress: Progress,
    first_step: int = 0,
) -> int:
    """Train until early stopping on validation loss; returns the number of epochs run.
    The model's outputs are logits (the softmax is part of the inference model only)."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    started = time.perf_counter()
    title = f"Train {PHASE_NAMES[phase]} (at most {epochs} epochs)"
    with progress.phase(title), progress.bar(f"{phase} epochs", epochs) as advance:
        history = model.fit(
            _batches(*train, config.batch_size, shuffle_seed=config.seed),
            validation_data=_batches(*validation, config.batch_size),
            epochs=epochs,
            shuffle=False,  # the dataset shuffles itself, reproducibly, from the seed
            verbose=0,
            callbacks=[
                keras.callbacks.EarlyStopping(
                    monitor="val_loss",
                    patience=config.early_stopping_patience,
                    restore_best_weights=True,
                ),
                EpochMetricsLogger(phase, first_step),
                KerasProgress(advance),
            ],
        )
    epochs_run = len(history.epoch)
    best = min(history.history["val_loss"])
    progress.done(f"{epochs_run} epochs; best validation loss {best:.4f}")
    _record(timings, phase, time.perf_counter() - started, epochs_run * len(train[0]))
    return epochs_run


def _batches(
    inputs: np.ndarray, labels: np.ndarray, batch_size: int, shuffle_seed: int | None = None
) -> tf.data.Dataset:
    # Images are decoded once, into memory, by load_dataset; this only batches and prefetches.
    batches = tf.data.Dataset.from_tensor_slices((inputs, labels))
    if shuffle_seed is not None:
        batches = batches.shuffle(len(inputs), seed=shuffle_seed, reshuffle_each_iteration=True)
    return batches.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _record(timings: dict[str, float], phase: str, seconds: float, images: int) -> None:
    timings[f"{phase}_wall_seconds"] = seconds
    timings[f"{phase}_images_per_second"] = images / seconds if seconds else 0.0
    logger.info("phase %s: %.1f s, %.1f images/s", phase, seconds, images / max(seconds, 1e-9))


def _log_plots(
    dataset: Dataset, pixels: np.ndarray, labels: np.ndarray, test: ModelOutput, names: list[str]
) -> None:
    class_names, probabilities = dataset.class_names, test.probabilities
    figures = {
        "plots/confusion_matrix.png": evaluate.plot_confusion_matrix(
            labels, probabilities, class_names
        ),
        "plots/misclassified.png": evaluate.plot_misclassified(
            pixels, labels, probabilities, class_names, names
        ),
        "plots/reliability.png": evaluate.plot_reliability(labels, probabilities),
    }
    if len(np.unique(labels)) == 2:
        figures["plots/roc_curve.png"] = evaluate.plot_roc_curve(
            labels, probabilities, class_names[1]
        )
    for artifact, figure in figures.items():
        if figure is not None:
            mlflow.log_figure(figure, artifact)
            plt.close(figure)


def _describe(dataset: Dataset) -> str:
    counts = {split: sum(labels.values()) for split, labels in dataset.counts().items()}
    summary = dataset.summary()
    return (
        f"{summary['valid']} photos: {counts['train']} train, {counts['validation']} "
        f"validation, {counts['test']} test ({summary['rejected']} rejected, "
        f"{summary['duplicates']} duplicates)"
    )


def _check_splits(dataset: Dataset) -> None:
    counts = dataset.counts()
    for split, labels in counts.items():
        if not sum(labels.values()):
            raise ValueError(
                f"the {split} split of {dataset.root} is empty ({len(dataset.samples)} valid "
                f"images in all): add more images"
            )
    if min(counts["train"].values()) == 0:
        raise ValueError(f"the train split needs images of every class; it has {counts['train']}")
