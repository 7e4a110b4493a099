"""The model card of a trained model: what it is for, what it was trained on, how well it does
(with confidence intervals and by slice), how it is served, and what it should not be used for.

Written once per training run, from the run's facts: every number comes from the metrics the
run logged to MLflow (training.tracking.LoggedMetrics), never computed a second time. The
markdown is the card; the HTML page is the same text rendered (markdown-it-py) with inline
CSS and the reliability diagram as a data: URL, so that it loads nothing from anywhere.
Both, and the diagram, go into the BentoML model and MLflow's model_card/ folder; the service
serves them at /model-card and /model-card.md.
"""

import base64
import html
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt
from matplotlib.figure import Figure

from catsdogs.config import MODEL_CARD_FILE, MODEL_CARD_HTML_FILE, MODEL_CARD_PLOT_FILE
from training.config import TrainConfig
from training.evaluate import SLICES

SECTIONS = (
    "Model details",
    "Intended use",
    "Training data",
    "Evaluation",
    "Serving",
    "Limitations",
    "Ethical considerations",
)
MISSING = "n/a"


@dataclass(frozen=True)
class CardFacts:
    """What the card says, all from one training run."""

    bento_tag: str
    mlflow_run_id: str
    mlflow_model_version: str
    trained_at: str  # when the run started, e.g. "2025-01-31 12:00 UTC"
    config: TrainConfig  # logged whole as the run's params
    dataset_fingerprint: str
    class_names: tuple[str, ...]
    metrics: Mapping[str, float]  # every metric of the run, as logged to MLflow
    int8_skipped: str | None = None  # why the model has no int8 copy, when it has none


def write_model_card(facts: CardFacts, reliability: Figure, folder: Path) -> dict[str, Path]:
    """model_card.md, model_card.html and the reliability diagram, in folder: {file name: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in
             (MODEL_CARD_FILE, MODEL_CARD_HTML_FILE, MODEL_CARD_PLOT_FILE)}  # fmt: skip
    reliability.savefig(paths[MODEL_CARD_PLOT_FILE], dpi=100)
    text = markdown(facts)
    paths[MODEL_CARD_FILE].write_text(text, encoding="utf-8")
    images = {MODEL_CARD_PLOT_FILE: paths[MODEL_CARD_PLOT_FILE].read_bytes()}
    page = render_html(text, f"Model card: {facts.bento_tag}", images)
    paths[MODEL_CARD_HTML_FILE].write_text(page, encoding="utf-8")
    return paths


def markdown(facts: CardFacts) -> str:
    parts = [
        f"# Model card: {facts.bento_tag}",
        _details(facts),
        _intended_use(),
        _training_data(facts),
        _evaluation(facts),
        _serving(facts),
        _limitations(),
        _ethics(),
    ]
    return "\n\n".join(part.strip() for part in parts) + "\n"


# --- Sections ------------------------------------------------------------------------------


def _details(facts: CardFacts) -> str:
    config, m = facts.config, facts.metrics
    phases = {name.removesuffix("_wall_seconds"): value for name, value in m.items()
              if name.endswith("_wall_seconds")}  # fmt: skip
    spent = ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in phases.items())
    version = facts.mlflow_model_version
    return _table(
        "## Model details",
        ("field", "value"),
        [
            ("Name", config.registered_model),
            ("BentoML tag", f"`{facts.bento_tag}`"),
            ("MLflow run", f"`{facts.mlflow_run_id}` (experiment `{config.experiment}`)"),
            ("MLflow model version", f"{version} (`models:/{config.registered_model}/{version}`)"),
            ("Trained", facts.trained_at),
            ("Mode", config.mode),
            ("Image size", f"{config.image_size} x {config.image_size} RGB"),
            ("Backbone", _backbone(config)),
            ("Classes", ", ".join(facts.class_names) + ", and `other` (novelty detector)"),
            ("Training time", f"{sum(phases.values()):.1f} s ({spent})"),
            ("Seed", str(config.seed)),
        ],
    )


def _intended_use() -> str:
    return """
## Intended use

- Tagging photos uploaded to a pet adoption platform as **cat** or **dog**.
- Flagging the photos a person should check: every `other` answer (the photo looks like no
  cat or dog photo the model learned from) and every cat or dog answer whose calibrated
  confidence is below the review threshold (`needs_review` in each answer).

Out of scope:

- identifying any other species (everything else is only `other`, at best);
- breeds, age, sex, health, medical or welfare judgements of an animal;
- photos of people, recognising or describing people;
- surveillance or tracking of animals or people;
- any decision taken on a flagged answer without a person looking at the photo.
"""


def _training_data(facts: CardFacts) -> str:
    config, m = facts.config, facts.metrics
    rows = []
    for split in ("train", "validation", "test"):
        counts = [m.get(f"data_{split}_{label}", 0) for label in facts.class_names]
        rows.append((split, *(_count(c) for c in counts), _count(sum(counts))))
    counts = _table(
        "",
        ("split", *facts.class_names, "all"),
        rows,
    )
    return f"""
## Training data

- Source folder: `{config.data_dir}`; labels from the folder or file names.
- Valid photos: {_count(m.get("data_valid"))}, split train/validation/test by content hash.
- Rejected files (unreadable, corrupt, too small, ...; MLflow's `data/rejected.csv`):
  {_count(m.get("data_rejected"))}.
- Exact duplicates dropped (`data/duplicates.csv`): {_count(m.get("data_duplicates"))}.
- Dataset fingerprint: `{facts.dataset_fingerprint}`.

{counts}

Known issues: the Asirra / Kaggle "Dogs vs. Cats" corpus (Microsoft PetImages) has some label
noise (a few photos under the wrong label, or with neither animal) and near-duplicates that a
content hash does not catch (resized or re-encoded copies, which can land in different
splits); its photos are small and mostly pets in homes.
"""


def _evaluation(facts: CardFacts) -> str:
    config, m = facts.config, facts.metrics
    methods = {"accuracy": "Wilson", "precision": "Wilson", "recall": "Wilson",
               "f1": "bootstrap", "roc_auc": "bootstrap", "log_loss": "bootstrap"}  # fmt: skip
    positive = facts.class_names[1]
    rows = [(name, _number(m, f"test_{name}"), _interval(m, f"test_{name}"), method)
            for name, method in methods.items()]  # fmt: skip
    metrics = _table("", ("metric", "value", "95 % CI", "interval"), rows)
    rows = [(true, *(_count(m.get(f"test_confusion_{true}_as_{predicted}"))
                     for predicted in facts.class_names))
            for true in facts.class_names]  # fmt: skip
    confusion = _table("", ("true \\ predicted", *facts.class_names), rows)
    nonpet = (
        (_number(m, "nonpet_other_rate"), _interval(m, "nonpet_other_rate"),
         _count(m["nonpet_count"]))
        if "nonpet_other_rate" in m
        else ("not measured (no non-pet folder)", "", "0")
    )  # fmt: skip
    test_count = _count(m.get("test_count"))
    open_world = _table(
        "",
        ("", "value", "95 % CI", "photos"),
        [
            ("test cat and dog photos called other", _number(m, "test_other_rate"),
             _interval(m, "test_other_rate"), test_count),
            ("non-pet photos called other (caught)", *nonpet),
            ("test answers flagged for review", _number(m, "test_review_rate"),
             _interval(m, "test_review_rate"), test_count),
            ("review threshold", _number(m, "review_threshold"), "", ""),
            ("novelty threshold", _number(m, "novelty_threshold"), "", ""),
        ],
    )  # fmt: skip
    calibration = _table(
        "",
        ("test split", "before temperature scaling", "after"),
        [("expected calibration error (10 bins)", _number(m, "calibration_test_ece_before"),
          _number(m, "calibration_test_ece")),
         ("log loss", _number(m, "calibration_test_log_loss_before"),
          _number(m, "calibration_test_log_loss"))],
    )  # fmt: skip
    slices = _table(
        "",
        ("slice", "definition", "photos", "accuracy", "95 % CI"),
        [_slice_row(m, name, definition) for name, definition in SLICES.items()],
    )
    return f"""
## Evaluation

On the test split: {test_count} photos the model never trained on. The
precision, recall and F1 are those of `{positive}`. Intervals: Wilson score intervals for
proportions, a percentile bootstrap (1000 resamples, seed {config.seed}) for F1, ROC AUC and
log loss.

{metrics}

Confusion matrix (cat/dog decision, before `other`):

{confusion}

Calibration: one temperature, {_number(m, "calibration_temperature")}, divides the logits (fitted
on {_number(m, "calibration_temperature_photos", ".0f")} held-out photos: with the
logistic-regression head, each training photo's logits from the inner model fitted without it;
otherwise the validation split). On the test split:

{calibration}

![Reliability diagram of the test split]({MODEL_CARD_PLOT_FILE})

Open-world answers. Novelty method: deep k-NN, the mean cosine distance of a photo's
embedding to its {config.novelty_k} nearest training photos' embeddings; the threshold is the
score that {config.novelty_quantile:.1%} of held-out cat and dog photos stay under. It is
calibrated on cat and dog photos alone: the non-pet photos (`{config.nonpet_dir}`) only
measure it. The review threshold is the lowest confidence at which at least
{config.review_target:.1%} of the validation answers not flagged are right.

{open_world}

Accuracy by slice of the test photos:

{slices}
"""


def _serving(facts: CardFacts) -> str:
    config, m = facts.config, facts.metrics
    if facts.int8_skipped:
        precision = f"- Precision: **fp32**. No int8 copy was made: {facts.int8_skipped}."
    else:
        precision = f"""- Precision: **int8** by default (static quantization, activation
  ranges from {config.quantization_photos} training photos), with its own novelty and review
  thresholds; fp32 with `CATSDOGS_PRECISION=fp32`.
- The int8 gate, on the test split (training fails when it does not hold):

{_int8_gate(m)}"""
    return f"""
## Serving

- Runtime: ONNX Runtime (the Keras model exported to ONNX at training time; the service runs
  no TensorFlow).
- ONNX parity: the largest difference between the Keras and the ONNX probabilities on the
  test split is {_number(m, "onnx_max_abs_diff", ".1e")} (training fails above
  {_number(m, "onnx_tolerance", ".0e")}).
{precision}
"""


def _int8_gate(m: Mapping[str, float]) -> str:
    drop = _number(m, "int8_gate_max_accuracy_drop")
    rise = _number(m, "int8_gate_max_log_loss_rise", ".0%")
    return _table(
        "",
        ("", "int8", "fp32", "gate"),
        [
            ("same label as fp32", _number(m, "int8_same_label"), "",
             f"at least {_number(m, 'int8_gate_min_same_label')}"),
            ("accuracy", _number(m, "int8_accuracy_int8"), _number(m, "int8_accuracy_fp32"),
             f"at most {drop} lower"),
            ("log loss", _number(m, "int8_log_loss_int8"), _number(m, "int8_log_loss_fp32"),
             f"at most {rise} higher"),
            ("largest probability change", _number(m, "int8_max_probability_change"), "", ""),
            ("novelty threshold", _number(m, "int8_novelty_threshold"),
             _number(m, "novelty_threshold"), ""),
            ("review threshold", _number(m, "int8_review_threshold"),
             _number(m, "review_threshold"), ""),
            ("test photos called other", _number(m, "int8_other_rate"),
             _number(m, "test_other_rate"), ""),
            ("non-pet photos called other", _number(m, "int8_nonpet_other_rate"),
             _number(m, "nonpet_other_rate"), ""),
            ("ECE", _number(m, "int8_ece"), _number(m, "test_ece"), ""),
        ],
    )  # fmt: skip


def _limitations() -> str:
    return """
## Limitations

- Drawings, cartoons, toys and screenshots of cats or dogs: the model learned from photos;
  such images may get `cat`, `dog` or `other`.
- Several animals in one photo, or a cat and a dog together: the answer is one label.
- Other species that look like cats or dogs (foxes, wolves, big cats, rabbits...) may be
  called cat or dog.
- Very dark or very small photos (see the slices above) are rarer in the training data and
  may be less accurate.
- The novelty threshold is calibrated on cat and dog photos only: how many photos of other
  things it catches is measured on a small set of non-pet photos, not guaranteed.
"""


def _ethics() -> str:
    return """
## Ethical considerations

- Keep a person in the loop: every answer with `needs_review` should be checked by a person
  before anything is decided on it, and a person should be able to correct any label.
- The model is meant for sorting pet photos; do not reuse it for decisions about animals'
  welfare or about people.
- The training photos come from a public corpus; uploaded photos are not used for training
  and the service keeps no image bytes (its prediction records hold statistics only).
"""


# --- Formatting ----------------------------------------------------------------------------


def _backbone(config: TrainConfig) -> str:
    if config.mode == "scratch":
        return "a small four-block CNN from random weights (no pretrained weights)"
    frozen = "frozen; only the classifier head trained, on its pooled features"
    if config.mode == "finetune":
        frozen = f"head trained with it frozen, then its top {config.finetune_layers} layers"
    return f"MobileNetV2 ({config.weights} weights), {frozen}"


def _slice_row(m: Mapping[str, float], name: str, definition: str) -> tuple[str, ...]:
    count = m.get(f"test_slice_{name}_count", 0)
    if not count:
        return name, definition, "0", "no photos", ""
    key = f"test_slice_{name}_accuracy"
    return name, definition, _count(count), _number(m, key), _interval(m, key)


def _number(m: Mapping[str, float], name: str, spec: str = ".4f") -> str:
    value = m.get(name, math.nan)
    if not math.isfinite(value):
        return MISSING
    text = format(value, spec)
    return text[1:] if text.startswith("-") and not text.strip("-0.%e+") else text  # no "-0"


def _interval(m: Mapping[str, float], name: str) -> str:
    low, high = _number(m, f"{name}_ci_low"), _number(m, f"{name}_ci_high")
    return MISSING if MISSING in (low, high) else f"[{low}, {high}]"


def _count(value: float | None) -> str:
    return MISSING if value is None or not math.isfinite(value) else str(int(value))


def _table(heading: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = [heading, ""] if heading else []
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(" --- " for _ in header) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# --- HTML ----------------------------------------------------------------------------------

CSS = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.6rem; text-align: left; }
th { background: #f3f3f3; } code { font-size: 0.9em; } img { max-width: 24rem; }
"""
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
{body}</body>
</html>
"""


def render_html(text: str, title: str, images: Mapping[str, bytes]) -> str:
    """The markdown as one self-contained HTML page: images named in `images` become data:
    URLs (PNG), raw HTML in the markdown is escaped."""
    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = parser.parse(text)
    for token in tokens:
        for child in token.children or ():
            source = child.attrGet("src")
            if child.type == "image" and source in images:
                encoded = base64.b64encode(images[source]).decode("ascii")
                child.attrSet("src", f"data:image/png;base64,{encoded}")
    body = parser.renderer.render(tokens, parser.options, {})
    return PAGE.format(title=html.escape(title), css=CSS, body=body)
