"""Face augmentation on whole batches in TensorFlow: flip, affine, brightness/contrast, erasing."""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of each random transform."""

    rotate_deg: float = 12.0
    zoom: float = 0.12
    shift: float = 0.10
    brightness: float = 0.20
    contrast: float = 0.25
    erase_prob: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.15)


def _affine(x: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """One projective transform per image combining flip, rotation, zoom and shift about the centre."""
    n = tf.shape(x)[0]
    size = tf.cast(tf.shape(x)[1], tf.float32)
    c = (size - 1.0) / 2.0
    theta = tf.random.uniform([n], -1.0, 1.0) * (cfg.rotate_deg * math.pi / 180.0)
    scale = 1.0 + tf.random.uniform([n], -cfg.zoom, cfg.zoom)
    flip = tf.where(tf.random.uniform([n]) < 0.5, -1.0, 1.0)
    tx = tf.random.uniform([n], -cfg.shift, cfg.shift) * size
    ty = tf.random.uniform([n], -cfg.shift, cfg.shift) * size
    # The transform maps output coordinates to input ones: inverse scale, rotation, then flip x.
    cos, sin = tf.cos(theta) / scale, tf.sin(theta) / scale
    a0, a1 = flip * cos, -flip * sin
    b0, b1 = sin, cos
    a2 = c - a0 * c - a1 * c + tx
    b2 = c - b0 * c - b1 * c + ty
    zeros = tf.zeros([n])
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=tf.shape(x)[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")


def _photometric(x: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    n = tf.shape(x)[0]
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    contrast = 1.0 + tf.random.uniform([n, 1, 1, 1], -cfg.contrast, cfg.contrast)
    bright = tf.random.uniform([n, 1, 1, 1], -cfg.brightness, cfg.brightness) * 255.0
    return tf.clip_by_value((x - mean) * contrast + mean + bright, 0.0, 255.0)


def _erase(x: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """Random erasing: a rectangle of noise in about erase_prob of the images."""
    n = tf.shape(x)[0]
    size = tf.cast(tf.shape(x)[1], tf.float32)
    area = tf.random.uniform([n], *cfg.erase_area) * size * size
    aspect = tf.exp(tf.random.uniform([n], math.log(0.3), math.log(3.3)))
    h = tf.minimum(tf.sqrt(area * aspect), size)
    w = tf.minimum(tf.sqrt(area / aspect), size)
    y0 = tf.random.uniform([n]) * (size - h)
    x0 = tf.random.uniform([n]) * (size - w)
    grid = tf.range(size)
    rows = (grid[None, :] >= y0[:, None]) & (grid[None, :] < (y0 + h)[:, None])
    cols = (grid[None, :] >= x0[:, None]) & (grid[None, :] < (x0 + w)[:, None])
    on = tf.random.uniform([n]) < cfg.erase_prob
    mask = rows[:, :, None] & cols[:, None, :] & on[:, None, None]
    noise = tf.random.uniform(tf.shape(x), 0.0, 255.0)
    return tf.where(mask[..., None], noise, x)


def augment_batch(x: tf.Tensor, cfg: AugmentConfig = AugmentConfig()) -> tf.Tensor:
    """Augment a float32 batch (N, H, W, 1) of 0..255 pixels."""
    x = _affine(x, cfg)
    x = _photometric(x, cfg)
    return _erase(x, cfg)


def mixup(x: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor, alpha: float) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Mix each example with a random other one of its batch, images, targets and sample weights alike.

    The share of the example itself is max(l, 1 - l) with l ~ Beta(alpha, alpha) (Zhang et al. 2018), so
    its own label stays the larger part.
    """
    n = tf.shape(x)[0]
    a = tf.random.gamma([n], alpha)
    b = tf.random.gamma([n], alpha)
    lam = a / tf.maximum(a + b, 1e-12)
    lam = tf.maximum(lam, 1.0 - lam)
    other = tf.random.shuffle(tf.range(n))

    def mix(v: tf.Tensor, share: tf.Tensor) -> tf.Tensor:
        return share * v + (1.0 - share) * tf.gather(v, other)

    return mix(x, lam[:, None, None, None]), mix(targets, lam[:, None]), mix(weights, lam)
