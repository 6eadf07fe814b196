"""Model builders: the edge CNN, and VGG16/ResNet50 from keras.applications."""

from __future__ import annotations

import keras
from keras import layers

NUM_CLASSES = 7
SIZE = 48
CAFFE_MEAN = (103.939, 116.779, 123.68)


def edge_cnn(widths: tuple[int, ...] = (32, 64, 128, 256), depth: int = 2, dropout: float = 0.4) -> keras.Model:
    """VGG-style net of int8-friendly ops: 3x3 conv + BN + ReLU blocks, max pooling, global pooling, dense."""
    inp = keras.Input((SIZE, SIZE, 1), name="face")
    # Pixels arrive as 0..255 so the int8 input quantization maps a uint8 pixel exactly.
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    for i, w in enumerate(widths):
        for j in range(depth):
            x = layers.Conv2D(w, 3, padding="same", use_bias=False, name=f"b{i}_conv{j}")(x)
            x = layers.BatchNormalization(name=f"b{i}_bn{j}")(x)
            x = layers.ReLU(name=f"b{i}_relu{j}")(x)
        if i < len(widths) - 1:
            x = layers.MaxPooling2D(name=f"b{i}_pool")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(256, name="fc")(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(dropout / 2)(x)
    out = layers.Dense(NUM_CLASSES, name="logits", dtype="float32")(x)
    return keras.Model(inp, out, name="edge_cnn")


def _applications(arch: str, weights: str | None, size: int) -> keras.Model:
    """VGG16/ResNet50 on gray 48x48 faces repeated to three channels and resized to `size`.

    `weights`: None (from scratch), "imagenet" (downloads), or a file of the trunk's weights without
    its top: keras.applications' own `*_notop.h5`, or a `.weights.h5` saved from such a trunk.
    """
    build = {"vgg16": keras.applications.VGG16, "resnet50": keras.applications.ResNet50}[arch]
    inp = keras.Input((SIZE, SIZE, 1), name="face")
    x = layers.Resizing(size, size)(inp) if size != SIZE else inp
    x = layers.Concatenate()([x, x, x])
    # Both networks' "caffe" preprocessing: BGR mean subtraction (gray makes the channel order moot).
    x = layers.Normalization(mean=CAFFE_MEAN, variance=(1.0, 1.0, 1.0), name="preprocess")(x)
    base = build(include_top=False, weights=weights, input_shape=(size, size, 3), pooling="avg")
    if arch == "resnet50" and weights is None:
        zero_residual_gamma(base)
    x = base(x)
    x = layers.Dropout(0.4)(x)
    out = layers.Dense(NUM_CLASSES, name="logits", dtype="float32")(x)
    return keras.Model(inp, out, name=arch)


def zero_residual_gamma(resnet: keras.Model) -> None:
    """Zero the scale of each residual block's last batch norm, so every block starts as the identity.

    Keras' ResNet50 from scratch barely learned at 48x48 (Goyal et al. 2017's zero-gamma; the model card has the probe).
    """
    for layer in resnet.layers:
        if layer.name.endswith("_3_bn"):
            layer.gamma.assign(keras.ops.zeros_like(layer.gamma))


def build(arch: str, weights: str | None = None, size: int | None = None) -> keras.Model:
    """The model named by --arch; input (48, 48, 1) pixels in 0..255, output logits.

    `size` is the side the VGG16/ResNet50 trunk sees (the face is resized to it); the edge nets are 48 only.
    """
    if arch in ("edge", "edge-small"):
        if size not in (None, SIZE):
            raise ValueError(f"--input-size: {arch} takes {SIZE}x{SIZE} faces only")
        return edge_cnn() if arch == "edge" else edge_cnn(widths=(16, 32, 64, 128), depth=1)
    if arch in ("vgg16", "resnet50"):
        return _applications(arch, weights, size or SIZE)
    raise ValueError(f"unknown arch {arch!r}")


ARCHS = ("edge", "edge-small", "vgg16", "resnet50")
