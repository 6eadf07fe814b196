"""Face augmentation on whole batches in TensorFlow: flip, affine, brightness/contrast, erasing, and the
camera's degradations (small faces, blur, noise, JPEG, dark faces, yaw) that `--augment runtime` adds."""

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
    # What a camera does to a face before it reaches the classifier; each applies to about `prob` of the faces.
    # 0 leaves them off (the "basic" recipe the first shipped model was trained with).
    yaw: float = 0.0  # horizontal perspective: the far side of the face shrinks by up to this share
    lowres_prob: float = 0.0
    lowres_px: tuple[int, int] = (16, 40)  # the side a small face is seen at before it is upscaled to 48
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    noise_prob: float = 0.0
    noise_sigma: tuple[float, float] = (2.0, 12.0)
    gamma_prob: float = 0.0
    gamma: tuple[float, float] = (0.5, 2.5)  # above 1 darkens: a face in a dim room
    flat_prob: float = 0.0
    flat_contrast: tuple[float, float] = (0.3, 0.7)  # contrast kept in a flat, low-contrast face
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (20, 80)


# The recipe that looks like the runtime: the detector's framing jitter after alignment (eyes are levelled,
# so less roll; more scale and shift), and every degradation above.
# About 30% of the faces stay clean of all six degradations.
RUNTIME = AugmentConfig(rotate_deg=8.0, zoom=0.15, shift=0.08, yaw=0.2, lowres_prob=0.25, blur_prob=0.15,
                        noise_prob=0.2, gamma_prob=0.25, flat_prob=0.1, jpeg_prob=0.2)
PRESETS = {"basic": AugmentConfig(), "runtime": RUNTIME}


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
    # Yaw: a projective term in x, so one side of the face is seen smaller than the other. With
    # k = 1 + p * (x - c) the centre stays put; dividing the whole transform by 1 - p * c writes it with TF's
    # fixed constant 1 (a projective transform is the same up to scale).
    p = tf.random.uniform([n], -cfg.yaw, cfg.yaw) / size
    norm = 1.0 - p * c
    a0, a1, a2, b0, b1, b2 = (v / norm for v in (a0, a1, a2, b0, b1, b2))
    zeros = tf.zeros([n])
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, p / norm, zeros], axis=1)
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


def _some(x: tf.Tensor, changed: tf.Tensor, prob: float) -> tf.Tensor:
    """`changed` for about `prob` of the images of the batch, `x` for the rest."""
    on = tf.random.uniform([tf.shape(x)[0], 1, 1, 1]) < prob
    return tf.where(on, changed, x)


def _lowres(x: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """A face seen at a side of lowres_px (one size per batch), upscaled back as the runtime's crop does."""
    size = tf.shape(x)[1:3]
    side = tf.random.uniform([], cfg.lowres_px[0], cfg.lowres_px[1] + 1, dtype=tf.int32)
    small = tf.image.resize(x, [side, side], method="area")
    return tf.image.resize(small, size, method="bilinear")


def _blur(x: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """Gaussian blur, one sigma per batch (defocus, motion at low shutter speeds)."""
    sigma = tf.random.uniform([], *cfg.blur_sigma)
    r = tf.range(-3.0, 4.0)
    k = tf.exp(-(r ** 2) / (2.0 * sigma ** 2))
    k = k / tf.reduce_sum(k)
    padded = tf.pad(x, [[0, 0], [3, 3], [3, 3], [0, 0]], mode="REFLECT")
    x = tf.nn.conv2d(padded, tf.reshape(k, [7, 1, 1, 1]), 1, "VALID")
    return tf.nn.conv2d(x, tf.reshape(k, [1, 7, 1, 1]), 1, "VALID")


def _noise(x: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """Gaussian sensor noise, one sigma per image."""
    sigma = tf.random.uniform([tf.shape(x)[0], 1, 1, 1], *cfg.noise_sigma)
    return tf.clip_by_value(x + tf.random.normal(tf.shape(x)) * sigma, 0.0, 255.0)


def _gamma(x: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """Gamma per image, log-uniform in cfg.gamma: dark faces (above 1) and washed-out ones (below)."""
    lo, hi = math.log(cfg.gamma[0]), math.log(cfg.gamma[1])
    g = tf.exp(tf.random.uniform([tf.shape(x)[0], 1, 1, 1], lo, hi))
    return 255.0 * tf.pow(tf.clip_by_value(x / 255.0, 0.0, 1.0), g)


def _flat(x: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """Contrast squeezed toward the face's mean: backlight, haze, a cheap sensor."""
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    keep = tf.random.uniform([tf.shape(x)[0], 1, 1, 1], *cfg.flat_contrast)
    return (x - mean) * keep + mean


def _jpeg(x: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """JPEG at a quality drawn per batch (the codec works one image at a time)."""
    quality = tf.random.uniform([], cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1, dtype=tf.int32)
    pixels = tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)
    out = tf.map_fn(lambda img: tf.image.adjust_jpeg_quality(img, quality), pixels,
                    fn_output_signature=tf.TensorSpec([None, None, 1], tf.uint8))
    return tf.reshape(tf.cast(out, tf.float32), tf.shape(x))


def augment_batch(x: tf.Tensor, cfg: AugmentConfig = AugmentConfig()) -> tf.Tensor:
    """Augment a float32 batch (N, H, W, 1) of 0..255 pixels."""
    x = _affine(x, cfg)
    # The camera's order: light on the face, the lens, the sensor's size and noise, then the codec.
    if cfg.gamma_prob:
        x = _some(x, _gamma(x, cfg), cfg.gamma_prob)
    if cfg.flat_prob:
        x = _some(x, _flat(x, cfg), cfg.flat_prob)
    x = _photometric(x, cfg)
    if cfg.blur_prob:
        x = _some(x, _blur(x, cfg), cfg.blur_prob)
    if cfg.lowres_prob:
        x = _some(x, _lowres(x, cfg), cfg.lowres_prob)
    if cfg.noise_prob:
        x = _some(x, _noise(x, cfg), cfg.noise_prob)
    if cfg.jpeg_prob:
        x = _some(x, _jpeg(x, cfg), cfg.jpeg_prob)
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
