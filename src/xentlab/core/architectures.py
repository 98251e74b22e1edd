"""The backbones the loss-comparison literature trains, from Keras layers: the CIFAR ResNet (He et al. 2016) and any
`keras.applications` model. Each returns features; xentlab adds the head the loss implies (core.models.with_head).

Built only from Keras' own layers, so a logged model loads back without importing xentlab.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
from keras import layers, regularizers

from xentlab.errors import ConfigError

RESNET_DEPTHS = (20, 32, 44, 56, 110)  # He et al. 2016 Table 6; any 6n+2 builds


def _conv(filters: int, stride: int, decay: float, name: str) -> layers.Conv2D:
    # Keras' L2(l) adds l * sum(w^2) to the loss; SGD weight decay wd is the gradient of (wd / 2) * sum(w^2).
    return layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, kernel_initializer="he_normal",
                         kernel_regularizer=regularizers.L2(decay / 2) if decay else None, name=name)


def _basic_block(x, filters: int, stride: int, decay: float, name: str):
    """Two 3x3 convolutions with batch norm; the shortcut is the paper's option A (parameter-free): every other
    pixel, the new channels zero (a Rescaling by 0 of the same pixels, concatenated)."""
    h = layers.ReLU(name=f"{name}_relu1")(layers.BatchNormalization(name=f"{name}_bn1")(
        _conv(filters, stride, decay, f"{name}_conv1")(x)))
    h = layers.BatchNormalization(name=f"{name}_bn2")(_conv(filters, 1, decay, f"{name}_conv2")(h))
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.MaxPooling2D(pool_size=1, strides=stride, padding="same", name=f"{name}_subsample")(x)
        extra = filters - x.shape[-1]
        zeros = layers.Rescaling(0.0, name=f"{name}_zeros")(shortcut)
        shortcut = layers.Concatenate(name=f"{name}_pad")([shortcut, *[zeros] * (extra // x.shape[-1])])
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([h, shortcut]))


def resnet(input_shape: tuple[int, ...], *, depth: int = 20, width: int = 16, weight_decay: float = 1e-4,
           **_: Any) -> keras.Model:
    """The CIFAR ResNet of He et al. 2016 §4.2: a 3x3 conv, three stages of n basic blocks with width, 2 width and
    4 width filters (the 2nd and 3rd start with stride 2), global average pooling; depth = 6n + 2.

    ResNet-20 has 0.27 M parameters and ResNet-32 0.46 M with 10 classes, as in the paper's Table 6.
    """
    if depth < 8 or (depth - 2) % 6:
        raise ConfigError(f"model.depth={depth}: a CIFAR ResNet has depth 6n+2; use one of {list(RESNET_DEPTHS)}")
    if len(input_shape) != 3:
        raise ConfigError(f"model=resnet takes images (height, width, channels), got inputs of shape {input_shape}; "
                          f"use model=mlp for flat features")
    blocks = (depth - 2) // 6
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.ReLU(name="stem_relu")(layers.BatchNormalization(name="stem_bn")(
        _conv(width, 1, weight_decay, "stem_conv")(inputs)))
    for stage, filters in enumerate((width, 2 * width, 4 * width), start=1):
        for block in range(1, blocks + 1):
            stride = 2 if stage > 1 and block == 1 else 1
            x = _basic_block(x, filters, stride, weight_decay, name=f"stage{stage}_block{block}")
    return keras.Model(inputs, layers.GlobalAveragePooling2D(name="pool")(x), name=f"resnet{depth}")


# Smallest input side each application accepts without its top (Keras' own checks); 32 for the others.
MIN_SIDE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}
FETCH_ONCE = (
    "fetch the weights once on a machine with a network: python -c \"import keras; "
    "keras.applications.{arch}(include_top=False, weights='imagenet')\" leaves the file in ~/.keras/models/; "
    "copy it here and set model.weights=PATH"
)


def application(arch: str):
    """The `keras.applications` constructor named `arch` (ResNet50, EfficientNetB0, MobileNetV3Small, ...)."""
    builder = getattr(keras.applications, arch, None)
    if not arch[:1].isupper() or not callable(builder):
        known = sorted(n for n in dir(keras.applications) if n[:1].isupper())
        raise ConfigError(f"model.arch={arch} is not a keras.applications model; known: {known}")
    return builder


def _weights_file(weights: str | None, arch: str) -> str | None:
    if weights is None:
        return None
    if weights == "imagenet":
        raise ConfigError(f"model.weights=imagenet would download at run time, which xentlab never does; "
                          f"{FETCH_ONCE.format(arch=arch)}")
    path = Path(weights).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"model.weights={weights}: no such file ({path}); {FETCH_ONCE.format(arch=arch)}, "
                          f"or set model.weights=null to train from scratch")
    return str(path)


def keras_app(input_shape: tuple[int, ...], *, arch: str = "MobileNetV3Small", weights: str | None = None,
              freeze_backbone: bool = False, image_size: list[int] | None = None, **_: Any) -> keras.Model:
    """A `keras.applications` model without its top, average-pooled: the features xentlab puts its head on.

    Inputs smaller than `image_size` (default: the input's size, raised to the model's smallest) are resized; a
    grayscale image is repeated to 3 channels when pre-trained weights (a local file, never a download) expect
    colour. `freeze_backbone` keeps the backbone's weights and its batch-norm statistics as loaded.
    """
    builder = application(arch)
    if len(input_shape) != 3:
        raise ConfigError(f"model=keras_app takes images (height, width, channels), got inputs of shape "
                          f"{input_shape}; use model=mlp for flat features")
    path = _weights_file(weights, arch)
    side = MIN_SIDE.get(arch, 32)
    height, width = image_size or (max(input_shape[0], side), max(input_shape[1], side))
    channels = 3 if path else input_shape[2]
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if (height, width) != tuple(input_shape[:2]):
        x = layers.Resizing(height, width, name="resize")(x)
    if channels != input_shape[2]:
        if input_shape[2] != 1:
            raise ConfigError(f"model.weights expects 3 colour channels, the images have {input_shape[2]}")
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    base = builder(include_top=False, weights=path, input_shape=(height, width, channels), pooling="avg")
    base.trainable = not freeze_backbone
    x = base(x, training=False) if freeze_backbone else base(x)
    return keras.Model(inputs, x, name=f"keras_app_{arch}")
