"""The model architectures that training builds. Every model takes raw RGB uint8 images of
config.image_size and returns class probabilities: scaling and augmentation are layers inside
it."""

import os
from pathlib import Path

import keras
from keras import layers

from training.config import TrainConfig

BACKBONE_NAME = "mobilenetv2_1.00_224"  # keras.applications' name for the MobileNetV2 layer


class WeightsUnavailableError(RuntimeError):
    """The pretrained weights are neither cached nor downloadable."""


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
        [layers.Dropout(config.dropout, seed=config.seed), layers.Dense(num_classes, "softmax")],
        name="head",
    )


def build_transfer_model(
    config: TrainConfig, num_classes: int
) -> tuple[keras.Model, keras.Model, keras.Sequential]:
    """uint8 image -> augmentation -> [-1, 1] -> MobileNetV2 -> head.

    Returns (model, backbone, head): the parts are shared layers of the model.
    """
    backbone = build_backbone(config)
    head = build_head(config, num_classes)
    inputs = keras.Input((config.image_size, config.image_size, 3), dtype="uint8", name="image")
    x = build_augmentation(config)(keras.ops.cast(inputs, "float32"))
    x = layers.Rescaling(1 / 127.5, offset=-1, name="scale_to_unit_range")(x)
    # training=False keeps BatchNorm in inference mode even while its block is fine-tuned:
    # with small batches, updating its statistics would wreck the pretrained features.
    x = backbone(x, training=False)
    outputs = head(x)
    return keras.Model(inputs, outputs, name="catsdogs_mobilenetv2"), backbone, head


def build_feature_extractor(backbone: keras.Model, image_size: int) -> keras.Model:
    """uint8 image -> pooled backbone features, for the fast (cached-features) mode."""
    inputs = keras.Input((image_size, image_size, 3), dtype="uint8")
    x = layers.Rescaling(1 / 127.5, offset=-1)(keras.ops.cast(inputs, "float32"))
    return keras.Model(inputs, backbone(x, training=False), name="features")


def build_scratch_model(config: TrainConfig, num_classes: int) -> keras.Model:
    """A small four-block CNN from random weights, for users without pretrained weights."""
    inputs = keras.Input((config.image_size, config.image_size, 3), dtype="uint8", name="image")
    x = build_augmentation(config)(keras.ops.cast(inputs, "float32"))
    x = layers.Rescaling(1 / 255)(x)
    for filters in (32, 64, 128, 256):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(config.dropout, seed=config.seed)(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="catsdogs_scratch_cnn")


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
