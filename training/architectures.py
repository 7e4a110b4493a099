"""The model architectures that training builds.

A model is two parts: a backbone (an image, scaled to its value range, to an embedding: the
pooled features the novelty detector and the drift projection use) and a head (an embedding to
class logits). Training fits them through build_training_model (with augmentation); what is
saved and served is build_inference_model: raw RGB uint8 images of config.image_size in,
calibrated class probabilities and the embedding out, from one call.
"""

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
from keras import layers

from training.config import TrainConfig

BACKBONE_NAME = "mobilenetv2_1.00_224"  # keras.applications' name for the MobileNetV2 layer


class WeightsUnavailableError(RuntimeError):
    """The pretrained weights are neither cached nor downloadable."""


@dataclass
class ModelParts:
    backbone: keras.Model  # scaled image -> embedding
    head: keras.Sequential  # embedding -> logits
    scale: float  # raw pixel value x scale + offset = the backbone's input range
    offset: float
    # Pretrained backbones keep BatchNorm in inference mode even while fine-tuned: with small
    # batches, updating its statistics would wreck the pretrained features.
    frozen_batch_norm: bool


def build_augmentation(config: TrainConfig) -> keras.Sequential:
    """Random flips, rotations, zooms and contrast: active in training, identity at inference."""
    seed = config.seed
    steps = [layers.RandomFlip("horizontal", seed=seed)] if config.flip else []
    if config.rotation:
        steps.append(layers.RandomRotation(config.rotation, seed=seed + 1))
    if config.zoom:
        steps.append(layers.RandomZoom(config.zoom, seed=seed + 2))
    if config.contrast:
        steps.append(layers.RandomContrast(config.contrast, seed=seed + 3))
    return keras.Sequential(steps, name="augmentation")


def build_backbone(config: TrainConfig) -> keras.Model:
    """MobileNetV2 without its top, global-average-pooled: (N, size, size, 3) in [-1, 1] -> 1280."""
    try:
        with warnings.catch_warnings():
            # The ImageNet weights of the 224 px model serve every input size (the backbone is
            # convolutional): intended, not a problem to warn about.
            warnings.filterwarnings("ignore", message=".*Weights for input shape")
            return keras.applications.MobileNetV2(
                input_shape=(config.image_size, config.image_size, 3),
                include_top=False,
                weights=config.weights,
                pooling="avg",
            )
    except Exception as error:
        if config.weights != "imagenet":
            raise WeightsUnavailableError(
                f"could not load MobileNetV2 weights from {config.weights}: {error}"
            ) from error
        raise WeightsUnavailableError(_explain_missing_weights(config.image_size, error)) from error


def build_head(config: TrainConfig, num_classes: int) -> keras.Sequential:
    return keras.Sequential(
        [
            layers.Dropout(config.dropout, seed=config.seed),
            layers.Dense(
                num_classes,
                kernel_regularizer=keras.regularizers.L2(config.head_l2)
                if config.head_l2
                else None,
                name="logits",
            ),
        ],
        name="head",
    )


def build_parts(config: TrainConfig, num_classes: int) -> ModelParts:
    """The pretrained MobileNetV2 (fast, finetune) or a small CNN from random weights
    (scratch), with a classifier head."""
    if config.mode == "scratch":
        return ModelParts(_scratch_backbone(config), build_head(config, num_classes),
                          1 / 255, 0.0, frozen_batch_norm=False)  # fmt: skip
    return ModelParts(build_backbone(config), build_head(config, num_classes),
                      1 / 127.5, -1.0, frozen_batch_norm=True)  # fmt: skip


def _scaled_input(parts: ModelParts, image_size: int, augmentation=None):
    inputs = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    x = keras.ops.cast(inputs, "float32")
    if augmentation is not None:
        x = augmentation(x)
    x = layers.Rescaling(parts.scale, offset=parts.offset, name="scale_to_backbone_range")(x)
    return inputs, x


def _embed(parts: ModelParts, x):
    return parts.backbone(x, training=False) if parts.frozen_batch_norm else parts.backbone(x)


def build_training_model(parts: ModelParts, config: TrainConfig) -> keras.Model:
    """uint8 image -> augmentation -> backbone -> head -> logits (the parts' layers, shared)."""
    inputs, x = _scaled_input(parts, config.image_size, build_augmentation(config))
    return keras.Model(inputs, parts.head(_embed(parts, x)), name="catsdogs_training")


def build_feature_extractor(parts: ModelParts, image_size: int) -> keras.Model:
    """uint8 image -> embedding (the backbone's pooled features)."""
    inputs, x = _scaled_input(parts, image_size)
    return keras.Model(inputs, parts.backbone(x, training=False), name="features")


def build_inference_model(parts: ModelParts, image_size: int, temperature: float) -> keras.Model:
    """uint8 image -> {"probabilities": softmax(logits / temperature), "embedding"}: what is
    saved, exported to ONNX and served (no augmentation, calibrated)."""
    inputs, x = _scaled_input(parts, image_size)
    embedding = parts.backbone(x, training=False)
    logits = parts.head(embedding, training=False)
    scaled = layers.Rescaling(1.0 / temperature, name="temperature")(logits)
    probabilities = layers.Softmax(name="calibrated")(scaled)
    outputs = {"probabilities": probabilities, "embedding": embedding}
    return keras.Model(inputs, outputs, name="catsdogs")


def _scratch_backbone(config: TrainConfig) -> keras.Model:
    """A small four-block CNN from random weights, for users without pretrained weights."""
    inputs = keras.Input((config.image_size, config.image_size, 3))
    x = inputs
    for filters in (32, 64, 128, 256):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    return keras.Model(inputs, layers.GlobalAveragePooling2D()(x), name="scratch_cnn")


def unfreeze_top(backbone: keras.Model, count: int) -> None:
    """Make the top `count` layers of the backbone trainable, BatchNorm layers excepted."""
    backbone.trainable = True
    boundary = len(backbone.layers) - count
    for index, layer in enumerate(backbone.layers):
        layer.trainable = index >= boundary and not isinstance(layer, layers.BatchNormalization)


def _explain_missing_weights(image_size: int, error: Exception) -> str:
    rows = image_size if image_size in (96, 128, 160, 192, 224) else 224
    file_name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    return (
        f"MobileNetV2 ImageNet weights are not in the Keras cache and could not be downloaded "
        f"({type(error).__name__}: {error}).\n"
        f"Provide them in one of these ways:\n"
        f"  - copy {file_name} into {cache}/ (Keras then loads it with no download);\n"
        f"  - pass --weights /path/to/{file_name};\n"
        f"  - or train without pretrained weights: --mode scratch."
    )
