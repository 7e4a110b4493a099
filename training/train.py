"""Train the cats-vs-dogs classifier, top to bottom.

    data -> model -> (fast | finetune | scratch) training -> test evaluation
         -> ONNX export checked against Keras -> MLflow + BentoML

Every run is an MLflow run: the whole resolved TrainConfig, the split manifest with its
fingerprint, per-epoch metrics, phase timings, test metrics and plots, and the model (registered
as `catsdogs`, also saved to the BentoML store; each records the other's id).
"""

import functools
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import mlflow
import numpy as np
import tensorflow as tf

from catsdogs.classifier import Classifier
from training import evaluate
from training.architectures import (
    build_feature_extractor,
    build_scratch_model,
    build_transfer_model,
    unfreeze_top,
)
from training.config import TrainConfig
from training.data import Dataset, load_dataset
from training.export import check_onnx_parity, export_onnx
from training.keras_classifier import keras_infer
from training.progress import SILENT, Progress
from training.tracking import (
    EpochMetricsLogger,
    KerasProgress,
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


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    test_metrics: dict[str, float]
    registered: RegisteredModel
    timings: dict[str, float]


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
    x_train, y_train, _ = dataset.select("train")
    x_val, y_val, _ = dataset.select("validation")
    x_test, y_test, test_samples = dataset.select("test")
    num_classes = len(dataset.class_names)

    mlflow.set_experiment(config.experiment)
    with mlflow.start_run() as run, tempfile.TemporaryDirectory() as scratch:
        mlflow.log_params(config.model_dump(mode="json"))
        mlflow.log_dict(config.model_dump(mode="json"), "config.json")
        log_environment()
        log_dataset(dataset, Path(scratch) / "data")

        timings: dict[str, float] = {}
        fit = functools.partial(
            _fit,
            config=config,
            train=(x_train, y_train),
            validation=(x_val, y_val),
            timings=timings,
            progress=progress,
        )
        if config.mode == "scratch":
            model = build_scratch_model(config, num_classes)
            fit(model, "train", config.head_learning_rate, config.head_epochs)
        else:
            model, backbone, head = build_transfer_model(config, num_classes)
            if config.mode == "fast":
                # Backbone features once per image; then only the small head trains, on them.
                started = time.perf_counter()
                extractor = build_feature_extractor(backbone, config.image_size)
                images = len(x_train) + len(x_val)
                with (
                    progress.phase(f"Compute backbone features of {images} photos"),
                    progress.bar("features", images) as advance,
                ):
                    features = [
                        extractor.predict(
                            x, batch_size=64, verbose=0, callbacks=[KerasProgress(advance)]
                        )
                        for x in (x_train, x_val)
                    ]
                _record(timings, "features", time.perf_counter() - started, images)
                fit = functools.partial(
                    fit, train=(features[0], y_train), validation=(features[1], y_val)
                )
                fit(head, "head", config.head_learning_rate, config.head_epochs)
            else:
                backbone.trainable = False
                epochs = fit(model, "head", config.head_learning_rate, config.head_epochs)
                if config.finetune_epochs:
                    unfreeze_top(backbone, config.finetune_layers)
                    fit(
                        model,
                        "finetune",
                        config.finetune_learning_rate,
                        config.finetune_epochs,
                        first_step=epochs,
                    )
        mlflow.log_metrics(timings)

        metadata = {
            "class_names": list(dataset.class_names),
            "image_size": config.image_size,
            "mode": config.mode,
            "dataset_fingerprint": dataset.fingerprint,
        }
        with progress.phase(f"Evaluate on the {len(y_test)} test photos"):
            # Through the same compiled path that serving uses.
            classifier = Classifier(
                keras_infer(model, config.image_size),
                dataset.class_names,
                config.image_size,
                "training",
                runtime="keras",
            )
            probabilities = classifier.predict_pixels(x_test)
            test_metrics = evaluate.compute_metrics(y_test, probabilities)
            mlflow.log_metrics({f"test_{name}": value for name, value in test_metrics.items()})
            _log_plots(dataset, x_test, y_test, probabilities, [s.path for s in test_samples])

        with progress.phase("Export to ONNX and check it against Keras on the test photos"):
            # Serving runs the ONNX export: it must give the test split the same probabilities.
            onnx_path = export_onnx(model, Path(scratch) / "model.onnx", config.image_size)
            onnx_difference = check_onnx_parity(probabilities, onnx_path, x_test)
            mlflow.log_metric("onnx_max_abs_diff", onnx_difference)
            metadata["onnx_max_abs_diff"] = onnx_difference
        progress.done(f"largest probability difference {onnx_difference:.1e}")

        with progress.phase("Log the model to MLflow and save it to the BentoML store"):
            registered = register_model(
                model,
                onnx_path=onnx_path,
                registered_name=config.registered_model,
                example=x_test[:1],
                example_output=probabilities[:1],
                metadata=metadata,
                test_metrics=test_metrics,
                force_champion=config.force_champion,
            )
    return TrainResult(run.info.run_id, test_metrics, registered, timings)


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
    """Train until early stopping on validation loss; returns the number of epochs run."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    started = time.perf_counter()
    title = f"Train {PHASE_NAMES[phase]} (up to {epochs} epochs, early stopping on validation loss)"
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
    dataset: Dataset,
    pixels: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray,
    names: list[str],
) -> None:
    class_names = dataset.class_names
    figures = {
        "plots/confusion_matrix.png": evaluate.plot_confusion_matrix(
            labels, probabilities, class_names
        ),
        "plots/misclassified.png": evaluate.plot_misclassified(
            pixels, labels, probabilities, class_names, names
        ),
    }
    if len(np.unique(labels)) == 2:
        figures["plots/roc_curve.png"] = evaluate.plot_roc_curve(
            labels, probabilities, class_names[1]
        )
    for artifact, figure in figures.items():
        if figure is not None:
            mlflow.log_figure(figure, artifact)


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
