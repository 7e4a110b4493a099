"""The `catsdogs` command line: data, download, train, evaluate, predict."""

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from catsdogs.config import DEFAULT_IMAGE_SIZE, MODEL_NAME
from training.config import DEFAULT_DATA_DIR, Mode, Precision, Runtime, Split, TrainConfig

app = typer.Typer(
    help="Cats vs dogs: prepare data, train, evaluate and predict.", no_args_is_help=True
)

DataDir = Annotated[
    Path, typer.Argument(help="Folder of labelled photos (cat/ and dog/ folders, Kaggle layouts).")
]
ModelRef = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="BentoML tag (catsdogs:latest) or MLflow URI (models:/catsdogs@champion).",
    ),
]
PrecisionOption = Annotated[
    Precision,
    typer.Option(help="The ONNX copy to run (onnx runtime): int8, as the service, or fp32."),
]
RuntimeOption = Annotated[
    Runtime | None,
    typer.Option(
        help="onnx (what the service runs; BentoML tags only) or keras. "
        "Default: onnx for a BentoML tag, keras for an MLflow URI."
    ),
]


Verbose = Annotated[
    bool,
    typer.Option(
        "--verbose", "-v", help="Show every log line, TensorFlow's included, and all warnings."
    ),
]


def _configure_output(verbose: bool, tensorflow: bool = False) -> None:
    """Log lines for --verbose; otherwise warnings only, and the libraries kept quiet
    (tensorflow: the command imports TensorFlow)."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        from training.progress import quiet_libraries

        quiet_libraries(tensorflow)


def _is_mlflow_uri(reference: str) -> bool:
    from training.keras_classifier import MLFLOW_URI_SCHEMES

    return reference.startswith(MLFLOW_URI_SCHEMES)


@app.command()
def data(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    out: Annotated[Path, typer.Option(help="Where to write the manifest and reports.")] = Path(
        "reports/data"
    ),
    image_size: Annotated[int, typer.Option(help="Side of the preprocessed images.")] = (
        DEFAULT_IMAGE_SIZE
    ),
) -> None:
    """Validate, deduplicate and split a folder of photos; write manifest.csv and reports."""
    from training.data import load_dataset

    dataset = _or_exit(lambda: load_dataset(data_dir, image_size))
    paths = dataset.write_reports(out)
    summary = dataset.summary()
    typer.echo(f"valid images:  {summary['valid']}")
    typer.echo(f"rejected:      {summary['rejected']} {summary['rejected_by_reason']}")
    typer.echo(
        f"duplicates:    {summary['duplicates']} "
        f"({summary['duplicates_with_other_label']} with another label)"
    )
    for split, labels in dataset.counts().items():
        typer.echo(f"{split:<14} {labels}")
    typer.echo(f"fingerprint:   {dataset.fingerprint}")
    for name, path in paths.items():
        typer.echo(f"{name + ':':<14} {path}")


@app.command()
def download(
    dest: Annotated[Path, typer.Option(help="Folder to download and unpack into.")] = Path(
        "data/raw"
    ),
    url: Annotated[
        str | None, typer.Option(help="Zip URL (default: Microsoft's PetImages).")
    ] = None,
    kaggle: Annotated[
        str | None, typer.Option(help="Kaggle dataset (owner/name) via the kaggle CLI instead.")
    ] = None,
) -> None:
    """Download the real dataset (Microsoft's Kaggle PetImages zip, or a Kaggle dataset)."""
    from training.download import MICROSOFT_PETIMAGES_URL, download_kaggle, download_petimages

    if kaggle:
        root = _or_exit(lambda: download_kaggle(kaggle, dest))
    else:
        root = _or_exit(lambda: download_petimages(dest, url or MICROSOFT_PETIMAGES_URL))
        root = root / "PetImages"
    typer.echo(f"unpacked into {root}; next: catsdogs data {root}")


def _config_option(field: str, help: str, *names: str):
    """An option that overrides one TrainConfig field; its default is TrainConfig's."""
    default = TrainConfig.model_fields[field].default
    return typer.Option(*names, help=help, show_default=str(default))


@app.command()
def train(
    data_dir: Annotated[
        Path | None,
        typer.Argument(
            help="Folder of labelled photos (cat/ and dog/ folders, Kaggle layouts).",
            show_default="the embedded sample, data/sample",
        ),
    ] = None,
    mode: Annotated[Mode | None, _config_option("mode", "See TrainConfig.")] = None,
    seed: Annotated[int | None, _config_option("seed", "Seeds every source of randomness.")] = None,
    image_size: Annotated[
        int | None, _config_option("image_size", "Model input side, in pixels.")
    ] = None,
    weights: Annotated[
        str | None, _config_option("weights", '"imagenet" or a path to a .h5 file.')
    ] = None,
    head_epochs: Annotated[
        int | None, _config_option("head_epochs", "Max epochs of the head phase.")
    ] = None,
    finetune_epochs: Annotated[
        int | None, _config_option("finetune_epochs", "Max epochs of the fine-tuning phase.")
    ] = None,
    batch_size: Annotated[int | None, _config_option("batch_size", "Images per step.")] = None,
    force_champion: Annotated[
        bool | None,
        _config_option(
            "force_champion",
            "Make this model the champion even if it is not better.",
            "--force-champion/--no-force-champion",
        ),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config", help="JSON file of TrainConfig fields; options given here override it."
        ),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Train a model, track it in MLflow, register it and save it to the BentoML store."""

    given = {
        "data_dir": data_dir,
        "mode": mode,
        "seed": seed,
        "image_size": image_size,
        "weights": weights,
        "head_epochs": head_epochs,
        "finetune_epochs": finetune_epochs,
        "batch_size": batch_size,
        "force_champion": force_champion,
    }
    values = _or_exit(lambda: read_config_file(config_file)) if config_file else {}
    values |= {name: value for name, value in given.items() if value is not None}
    config = _or_exit(lambda: TrainConfig(**values))
    _configure_output(verbose, tensorflow=True)
    from training.progress import ConsoleProgress
    from training.train import train as run_training

    console = Console()
    console.print(
        f"[bold]catsdogs train[/bold]: {config.mode} mode, {config.image_size} px, "
        f"seed {config.seed}, data {config.data_dir}"
    )
    result = _or_exit(lambda: run_training(config, ConsoleProgress(console, quiet=not verbose)))
    _show_training_result(console, result)


def _show_training_result(console: Console, result) -> None:
    import mlflow
    from rich.table import Table

    table = Table(title=f"Test split ({result.test_metrics['count']} photos)", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.test_metrics.items():
        if name != "count":
            table.add_row(name, f"{value:.4f}")
    console.print(table)
    registered = result.registered
    lines = [
        f"MLflow:   run {result.run_id}, model {registered.mlflow_uri} "
        f"({mlflow.get_tracking_uri()})",
        f"BentoML:  {registered.bento_tag} (`bentoml models list`)",
        f"Champion: {registered.champion_reason}",
        "",
        "Next: serve it, then ask it about a photo (in another terminal):",
        "  bentoml serve",
        f"  curl -F file=@{_example_photo()} http://127.0.0.1:3000/predict",
    ]
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False)


def _example_photo() -> str:
    photo = min((DEFAULT_DATA_DIR / "cat").glob("*.jpg"))
    try:
        return str(photo.relative_to(Path.cwd()))
    except ValueError:
        return str(photo)


def read_config_file(path: Path) -> dict:
    """TrainConfig fields from a JSON file (validated with the command line's values)."""
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a JSON object of TrainConfig fields")
    return values


@app.command()
def evaluate(
    data_dir: DataDir,
    model: ModelRef = f"{MODEL_NAME}:latest",
    runtime: RuntimeOption = None,
    precision: PrecisionOption = "int8",
    split: Annotated[
        Split, typer.Option(help="all, or one part of the content-hash split.")
    ] = "all",
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    verbose: Verbose = False,
) -> None:
    """Score a model on a folder of labelled photos."""
    _configure_output(verbose, tensorflow=runtime == "keras" or _is_mlflow_uri(model))
    from training.calibration import expected_calibration_error
    from training.data import load_dataset
    from training.evaluate import compute_metrics, format_metrics_table, open_world_metrics
    from training.keras_classifier import load_classifier

    classifier = _or_exit(lambda: load_classifier(model, runtime, precision))
    dataset = _or_exit(lambda: load_dataset(data_dir, classifier.image_size))
    if split == "all":
        pixels, labels = dataset.pixels, dataset.labels()
    else:
        pixels, labels, _ = dataset.select(split)
    if len(labels) == 0:
        _exit(f"no valid labelled images in {data_dir} (split {split})")
    output = classifier.predict_pixels(pixels)
    metrics = compute_metrics(labels, output.probabilities)
    metrics["ece"] = expected_calibration_error(output.probabilities, labels)
    if classifier.open_world is not None:
        answers = classifier.open_world.answer(
            output.probabilities, output.embeddings, classifier.class_names
        )
        metrics |= open_world_metrics(answers)
    if as_json:
        # The metrics apart: "precision" is both a metric and the model's numeric precision.
        report = {
            "model": classifier.source,
            "runtime": classifier.runtime,
            "precision": classifier.precision,
            "split": split,
            "metrics": metrics,
        }
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(f"model {classifier.source} ({classifier.runtime}) on {data_dir} ({split})")
        typer.echo(format_metrics_table(metrics))


@app.command()
def predict(
    images: Annotated[list[Path], typer.Argument(help="Image files to classify.")],
    model: ModelRef = f"{MODEL_NAME}:latest",
    runtime: RuntimeOption = None,
    precision: PrecisionOption = "int8",
    verbose: Verbose = False,
) -> None:
    """Classify image files: one line each: file, label (cat, dog or other), calibrated
    confidence, "review" when a person should check it, novelty score / its threshold."""
    _configure_output(verbose, tensorflow=runtime == "keras" or _is_mlflow_uri(model))
    from catsdogs.errors import RefusedInput
    from training.keras_classifier import load_classifier

    classifier = _or_exit(lambda: load_classifier(model, runtime, precision))
    if classifier.open_world is None:
        _exit(f"model {classifier.source} has no novelty detector (trained before it): retrain")
    for path in images:
        try:
            [answer] = classifier.answer_images([path.read_bytes()])
        except (RefusedInput, OSError) as error:
            typer.echo(f"{path}\terror: {error}", err=True)
            continue
        review = "review" if answer.needs_review else "ok"
        novelty = f"novelty {answer.novelty_score:.3f}/{answer.novelty_threshold:.3f}"
        typer.echo(f"{path}\t{answer.label}\t{answer.confidence:.4f}\t{review}\t{novelty}")


# --- drift (training/drift.py) -----------------------------------------------------------


@app.command()
def drift(
    records: Annotated[
        Path,
        typer.Argument(
            help="Folder with the service's prediction records ($CATSDOGS_MONITORING_DIR, a "
            "volume with one such folder per pod, or a copy): every data.<worker>.log* below."
        ),
    ] = Path("monitoring"),
    last: Annotated[
        int | None, typer.Option(min=1, help="Only the last N records (after --since/--until).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Records from this time: ISO 8601 or a duration back (24h, 7d)."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="Records before this time: ISO 8601 or a duration back (1h)."),
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option(
            help="Reference parquet for every model (default: each record's model's "
            "drift_reference.parquet in the BentoML store)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for report.html and summary.json.")
    ] = None,
    pushgateway: Annotated[
        str | None,
        typer.Option(help="Push the gauges to this Prometheus Pushgateway (host:port or URL)."),
    ] = None,
    metrics_file: Annotated[
        Path | None, typer.Option(help="Write the gauges to this file in Prometheus text format.")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Drift share of the fields that means drift [0.3]."),
    ] = None,
    min_records: Annotated[
        int | None, typer.Option(min=2, help="Fewer records of a model: not compared [50].")
    ] = None,
    embedding_view: Annotated[
        bool,
        typer.Option(
            help="With --out: Evidently's EmbeddingsDrift picture (t-SNE) in the report, "
            "seconds per model. The embedding verdict is the same without it."
        ),
    ] = True,
) -> None:
    """Compare recent prediction records with the model's reference (Evidently). Exit code 0:
    no drift (or too few records), 3: drift found, 1: the job failed."""
    from training import drift as drift_job

    def run():
        window = drift_job.Window(
            last=last,
            since=drift_job.parse_time(since) if since else None,
            until=drift_job.parse_time(until) if until else None,
        )
        return drift_job.run_drift(
            records,
            window,
            reference=reference,
            threshold=drift_job.DEFAULT_THRESHOLD if threshold is None else threshold,
            min_records=drift_job.DEFAULT_MIN_RECORDS if min_records is None else min_records,
            embedding_view=embedding_view and out is not None,  # no report, no picture
        )

    result = _or_exit(run)
    typer.echo(drift_job.format_result(result))
    if out:
        for name, path in _or_exit(lambda: drift_job.write_outputs(result, out)).items():
            typer.echo(f"{name}: {path}")
    if metrics_file:
        _or_exit(lambda: drift_job.write_metrics_file(result, metrics_file))
    if pushgateway:
        _or_exit(lambda: drift_job.push_metrics(result, pushgateway))
    raise typer.Exit(result.exit_code)


def _or_exit(action):
    """Run action; turn an error the user can fix into a one-line message and exit code 1."""
    try:
        return action()
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as error:
        _exit(str(error))
    except Exception as error:  # e.g. bentoml NotFound, MlflowException: still the user's input
        if type(error).__module__.startswith(("bentoml", "mlflow")):
            _exit(f"{type(error).__name__}: {error}")
        raise


def _exit(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


if __name__ == "__main__":
    app()
