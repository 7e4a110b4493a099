"""The one typed configuration of a training run. Its resolved values are logged whole."""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from catsdogs.config import DEFAULT_IMAGE_SIZE, MODEL_NAME

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "sample"
"""The small sample of real photos committed with the project: the embedded default."""
DEFAULT_NONPET_DIR = Path(__file__).resolve().parents[1] / "data" / "nonpet"
"""The committed photos with no cat or dog (data/nonpet/SOURCES.md): only ever measured."""

Mode = Literal["fast", "finetune", "scratch"]
Head = Literal["logreg", "keras"]
"""How the classifier head is fitted in fast mode: L2 logistic regression on the features
(its strength by inner cross-validation), or the Keras head trained by gradient descent."""
Runtime = Literal["onnx", "keras"]
"""How a trained model runs: ONNX Runtime (what the service runs) or Keras."""
Precision = Literal["int8", "fp32"]
"""Which ONNX copy runs: the int8 one (the service's default) or fp32."""
Split = Literal["all", "train", "validation", "test"]
"""All labelled images of a folder, or one part of the content-hash split."""


class TrainConfig(BaseModel):
    """Everything that decides what a training run does.

    mode:
      fast      train only the classifier head on backbone features computed once per image
                (no augmentation; minutes on 2 CPU cores even for the full data set)
      finetune  frozen-backbone phase with augmentation, then fine-tune the top of the
                backbone at a lower learning rate
      scratch   a small CNN trained from random weights, for users without pretrained weights
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = DEFAULT_DATA_DIR
    nonpet_dir: Path | None = Field(
        DEFAULT_NONPET_DIR,
        description="Photos with no cat or dog, only ever measured (never used to fit or choose "
        "anything): the share called other is reported. None, or a missing folder: skipped.",
    )
    mode: Mode = "fast"
    seed: int = 42
    image_size: int = Field(DEFAULT_IMAGE_SIZE, ge=32)
    # "imagenet" lets Keras use its cache (or download); a path loads a local .h5 file.
    weights: str = "imagenet"
    batch_size: int = Field(32, gt=0)

    # Head phase (fast and finetune modes) and the whole run in scratch mode.
    head: Head = "logreg"
    head_epochs: int = Field(20, ge=1)
    head_learning_rate: float = Field(1e-3, gt=0)
    dropout: float = Field(0.2, ge=0, lt=1)
    head_l2: float = Field(0.0, ge=0, description="L2 penalty on the head's weights.")
    # Fine-tuning phase (finetune mode only).
    finetune_epochs: int = Field(5, ge=0)
    finetune_learning_rate: float = Field(1e-5, gt=0)
    finetune_layers: int = Field(30, ge=0, description="Backbone layers unfrozen from the top.")
    early_stopping_patience: int = Field(3, ge=1)

    # Augmentation (active only while training; identity at inference).
    flip: bool = True
    rotation: float = Field(0.05, ge=0, description="Fraction of a full turn.")
    zoom: float = Field(0.1, ge=0)
    contrast: float = Field(0.1, ge=0)

    # Split by content hash: fractions of the [0, 1) hash range (each below 0.5, so train
    # always keeps more than nothing).
    validation_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)

    # Open-world answers (catsdogs/answers.py), calibrated on cat and dog photos only.
    novelty_k: int = Field(10, ge=1, description="Nearest training photos a score averages.")
    # Cat and dog photos called "other" must stay under 1 % on unseen photos: a threshold at
    # the 99 % point would give 1 % in expectation (so about half of all unseen sets would
    # exceed it); the 99.5 % point gives 0.5 %.
    novelty_quantile: float = Field(
        0.995, gt=0.5, lt=1, description="Share of held-out cat/dog photos not called other."
    )
    review_target: float = Field(
        0.995, gt=0.5, lt=1, description="Accuracy of the answers not flagged for review."
    )

    # The int8 copy served by default: activation ranges from this many training photos.
    quantization_photos: int = Field(200, ge=1)

    experiment: str = "catsdogs"
    registered_model: str = MODEL_NAME
    force_champion: bool = False
    deterministic: bool = True
