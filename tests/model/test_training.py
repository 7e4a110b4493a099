"""End to end: train on real photos, then check MLflow, the registry and the BentoML store."""

import csv
import json
from pathlib import Path

import bentoml
import keras
import mlflow
import numpy as np
import pytest
from typer.testing import CliRunner

from catsdogs.config import CLASS_NAMES, DEFAULT_IMAGE_SIZE, ONNX_TOLERANCE
from catsdogs.preprocessing import read_image
from helpers import SAMPLE_DIR, labelled_photos, photos
from training.cli import app
from training.config import TrainConfig
from training.data import load_dataset
from training.evaluate import METRIC_NAMES
from training.export import (
    EMBEDDING_TOLERANCE,
    ExportMismatchError,
    check_onnx_parity,
    export_onnx,
)
from training.keras_classifier import load_classifier
from training.tracking import CHAMPION_ALIAS, decide_promotion
from training.train import train


def test_run_records_config_data_metrics_and_artifacts(trained_model):
    client = mlflow.MlflowClient()
    run = client.get_run(trained_model.run_id)
    config = TrainConfig(data_dir=SAMPLE_DIR, mode="fast", experiment="tests")

    # The whole resolved configuration, field by field.
    for name, value in config.model_dump(mode="json").items():
        assert run.data.params[name] == str(value), name
    for name in METRIC_NAMES:
        assert run.data.metrics[f"test_{name}"] == pytest.approx(trained_model.test_metrics[name])
    assert run.data.metrics["test_accuracy"] >= 0.8  # a real model, not chance
    assert run.data.metrics["features_images_per_second"] > 0
    # The default head is a logistic regression: its L2 strength, chosen by cross-validation.
    assert config.head == "logreg" and run.data.metrics["head_c"] > 0

    dataset = load_dataset(SAMPLE_DIR, config.image_size)
    assert run.data.tags["dataset_fingerprint"] == dataset.fingerprint
    assert run.data.tags["bentoml_model_tag"] == trained_model.registered.bento_tag
    assert run.data.tags["version.tensorflow-cpu"] == "2.21.0"
    assert len(run.data.tags["mlflow.source.git.commit"]) == 40
    assert run.inputs.dataset_inputs[0].dataset.digest == dataset.fingerprint[:16]

    artifacts = _list_artifacts(client, run.info.run_id)
    for expected in (
        "config.json",
        "environment.json",
        "data/manifest.csv",
        "data/rejected.csv",
        "data/duplicates.csv",
        "plots/confusion_matrix.png",
        "plots/roc_curve.png",
    ):
        assert expected in artifacts, expected
    manifest_path = client.download_artifacts(run.info.run_id, "data/manifest.csv")
    with open(manifest_path) as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == len(dataset.samples) == 200
    assert {row["split"] for row in rows} == {"train", "validation", "test"}
    logged_config = json.loads(
        Path(client.download_artifacts(run.info.run_id, "config.json")).read_text()
    )
    assert logged_config == config.model_dump(mode="json")


def test_registry_and_bento_store_hold_the_same_model(trained_model):
    sample_images = [path for path, _ in labelled_photos(100)]
    registered = trained_model.registered
    from_mlflow = load_classifier(registered.mlflow_uri)
    from_bento = load_classifier(registered.bento_tag, runtime="keras")
    images = [path.read_bytes() for path in sample_images[::10]]
    answers_mlflow = from_mlflow.answer_images(images)
    answers_bento = from_bento.answer_images(images)
    dog_mlflow = [answer.probabilities["dog"] for answer in answers_mlflow]
    dog_bento = [answer.probabilities["dog"] for answer in answers_bento]
    np.testing.assert_allclose(dog_mlflow, dog_bento, atol=1e-6)
    assert [a.label for a in answers_mlflow] == [a.label for a in answers_bento]
    assert from_bento.class_names == from_mlflow.class_names == CLASS_NAMES
    assert from_bento.image_size == from_mlflow.image_size == DEFAULT_IMAGE_SIZE
    assert (from_mlflow.runtime, from_bento.runtime) == ("keras", "keras")

    # Each store points to the other.
    bento_model = bentoml.models.get(registered.bento_tag)
    assert bento_model.info.metadata["mlflow_run_id"] == trained_model.run_id
    assert bento_model.info.metadata["mlflow_model_version"] == registered.mlflow_version
    assert bento_model.info.metadata["test_metrics"]["accuracy"] == pytest.approx(
        trained_model.test_metrics["accuracy"]
    )
    version = mlflow.MlflowClient().get_model_version("catsdogs", registered.mlflow_version)
    assert version.tags["bentoml_model_tag"] == registered.bento_tag
    assert version.run_id == trained_model.run_id


@pytest.mark.parametrize(("runtime", "tolerance"), [("keras", 1e-6), ("onnx", ONNX_TOLERANCE)])
def test_evaluate_command_reproduces_the_logged_test_metrics(trained_model, runtime, tolerance):
    result = CliRunner().invoke(
        app,
        ["evaluate", str(SAMPLE_DIR), "--model", trained_model.registered.bento_tag,
         "--split", "test", "--json", "--runtime", runtime, "--precision", "fp32"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert (report["runtime"], report["precision"], report["split"]) == (runtime, "fp32", "test")
    metrics = report["metrics"]
    for name in (*METRIC_NAMES, "other_rate", "review_rate", "ece"):
        expected = trained_model.test_metrics[name]
        assert metrics[name] == pytest.approx(expected, abs=tolerance), name


def test_a_test_split_too_small_for_the_gate_gets_no_int8_copy(trained_model):
    bento_model = bentoml.models.get(trained_model.registered.bento_tag)
    assert "int8 gate needs 200" in bento_model.info.metadata["int8_gate"]["skipped"]
    assert not Path(bento_model.path_of("model.int8.onnx")).exists()
    run = mlflow.MlflowClient().get_run(trained_model.run_id)
    assert run.data.tags["int8"].startswith("skipped: 21 test photos")
    assert load_classifier(trained_model.registered.bento_tag).precision == "fp32"


def test_predict_command_labels_photos_and_reports_bad_files(trained_model, tmp_path):
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("hello")
    cat, dog = (photos(label)[0] for label in ("cat", "dog"))
    result = CliRunner().invoke(
        app, ["predict", str(cat), str(dog), str(not_an_image), "-m", "catsdogs:latest"]
    )
    assert result.exit_code == 0, result.output
    assert f"{cat}\tcat\t" in result.stdout and f"{dog}\tdog\t" in result.stdout
    assert "\tnovelty " in result.stdout
    assert "not an image" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("accuracy", "champion", "force", "expected"),
    [(0.9, None, False, True), (0.95, 0.9, False, True), (0.9, 0.9, False, False),
     (0.8, 0.9, False, False), (0.8, 0.9, True, True)],
)  # fmt: skip
def test_promotion_rule(accuracy, champion, force, expected):
    assert decide_promotion(accuracy, champion, force=force)[0] is expected


def test_champion_alias_moves_only_to_a_better_model_or_when_forced(trained_model):
    """Its own registered model name, so `catsdogs:latest` stays the session's fast model."""
    client = mlflow.MlflowClient()
    name = "catsdogs-alias"
    tiny = dict(data_dir=SAMPLE_DIR, experiment="tests-alias", registered_model=name)
    scratch = dict(mode="scratch", image_size=64, head_epochs=1, **tiny)

    first = train(TrainConfig(**scratch)).registered
    assert first.champion  # the first version always becomes champion

    better = train(TrainConfig(mode="fast", **tiny))
    assert better.registered.champion
    assert str(client.get_model_version_by_alias(name, CHAMPION_ALIAS).version) == (
        better.registered.mlflow_version
    )

    worse = train(TrainConfig(**scratch, seed=7))
    assert worse.test_metrics["accuracy"] < better.test_metrics["accuracy"]
    assert not worse.registered.champion
    assert str(client.get_model_version_by_alias(name, CHAMPION_ALIAS).version) == (
        better.registered.mlflow_version
    )
    assert client.get_run(worse.run_id).data.tags["champion"] == "false"

    forced = train(TrainConfig(**scratch, seed=7, force_champion=True)).registered
    assert forced.champion
    assert (
        str(client.get_model_version_by_alias(name, CHAMPION_ALIAS).version)
        == forced.mlflow_version
    )

    # Same data, seed and mode as the session's model: the same predictions (reproducibility).
    np.testing.assert_allclose(
        better.test_metrics["log_loss"], trained_model.test_metrics["log_loss"], rtol=1e-6
    )


def test_finetune_mode_trains_both_phases(tmp_path):
    config = TrainConfig(
        data_dir=SAMPLE_DIR, mode="finetune", head_epochs=1, finetune_epochs=1,
        experiment="tests-finetune", registered_model="catsdogs-finetune",
    )  # fmt: skip
    result = train(config)
    run = mlflow.MlflowClient().get_run(result.run_id)
    for phase in ("head", "finetune"):
        assert run.data.metrics[f"{phase}_wall_seconds"] > 0
        assert run.data.metrics[f"{phase}_images_per_second"] > 0
        assert f"{phase}_val_loss" in run.data.metrics
    classifier = load_classifier(result.registered.bento_tag)
    assert classifier.metadata["mode"] == "finetune"
    assert result.test_metrics["accuracy"] >= 0.7


def _list_artifacts(client, run_id, path=None):
    found = []
    for item in client.list_artifacts(run_id, path):
        found.extend(_list_artifacts(client, run_id, item.path) if item.is_dir else [item.path])
    return found


def test_served_onnx_export_matches_the_keras_model(trained_model):
    sample_images = [path for path, _ in labelled_photos(100)]
    """Serving runs the ONNX export: same probabilities as Keras on every sample photo
    (within ONNX_TOLERANCE), so the same labels, and the check is recorded at training time."""
    keras_model = load_classifier(trained_model.registered.bento_tag, runtime="keras")
    onnx_model = load_classifier(trained_model.registered.bento_tag, precision="fp32")
    assert onnx_model.runtime == "onnx"
    pixels = np.stack([read_image(path, onnx_model.image_size).pixels for path in sample_images])
    expected, actual = keras_model.predict_pixels(pixels), onnx_model.predict_pixels(pixels)
    assert np.max(np.abs(expected.probabilities - actual.probabilities)) <= ONNX_TOLERANCE
    assert (expected.probabilities.argmax(axis=1) == actual.probabilities.argmax(axis=1)).all()
    assert np.max(np.abs(expected.embeddings - actual.embeddings)) <= EMBEDDING_TOLERANCE
    answers = [keras_model.answer_pixels(pixels), onnx_model.answer_pixels(pixels)]
    assert [a.label for a in answers[0]] == [a.label for a in answers[1]]

    run = mlflow.MlflowClient().get_run(trained_model.run_id)
    assert run.data.metrics["onnx_max_abs_diff"] <= ONNX_TOLERANCE
    assert "onnx/model.onnx" in _list_artifacts(mlflow.MlflowClient(), trained_model.run_id)
    bento_model = bentoml.models.get(trained_model.registered.bento_tag)
    assert bento_model.info.metadata["onnx_max_abs_diff"] <= ONNX_TOLERANCE


def test_export_refuses_an_onnx_file_that_computes_something_else(trained_model, tmp_path):
    """The parity check can fail: another model's export differs from this model."""
    bento_model = bentoml.models.get(trained_model.registered.bento_tag)
    keras_model = load_classifier(trained_model.registered.bento_tag, runtime="keras")
    size = keras_model.image_size
    pixels = np.random.default_rng(0).integers(0, 256, (4, size, size, 3), dtype=np.uint8)
    expected = keras_model.predict_pixels(pixels)
    served = Path(bento_model.path_of("model.onnx"))
    assert check_onnx_parity(expected, served, pixels) <= ONNX_TOLERANCE
    inputs = keras.Input((size, size, 3), dtype="uint8")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255.0)(inputs))
    pooled = keras.layers.Concatenate()([pooled] * 427)[:, :1280]  # an embedding's shape
    other = keras.Model(inputs, {"probabilities": keras.layers.Dense(2, activation="softmax")(
        pooled), "embedding": pooled})  # fmt: skip
    other_path = export_onnx(other, tmp_path / "other.onnx", size)
    with pytest.raises(ExportMismatchError, match="differ from the Keras model"):
        check_onnx_parity(expected, other_path, pixels)
