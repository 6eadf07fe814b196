"""The emotion classifier: a TFLite model and its sidecar, run with LiteRT."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_fer.errors import ModelError
from edge_fer.models_path import shipped_model
from edge_fer.types import label_problem

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "edge_fer_int8.tflite"


def _interpreter_class() -> Any:
    """LiteRT first (numpy 2), then tflite_runtime (older Pi installs), then TensorFlow's copy."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            try:
                from tensorflow.lite import Interpreter
            except ImportError:
                raise ModelError("no TFLite runtime: pip install ai-edge-litert") from None
    return Interpreter


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the runtime's C-level banner ("Created TensorFlow Lite XNNPACK delegate") on fd 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def default_model_path() -> Path:
    """The model shipped inside the package (models/ in the source tree)."""
    return shipped_model(DEFAULT_MODEL_NAME)


def read_sidecar(model_path: Path) -> dict[str, Any]:
    """The JSON beside the model naming its labels and preprocessing."""
    side = model_path.with_suffix(".json")
    try:
        meta = json.loads(side.read_text())
    except FileNotFoundError:
        raise ModelError(f"{side}: the model's sidecar is missing") from None
    except (OSError, ValueError) as e:
        raise ModelError(f"{side}: unreadable sidecar ({e})") from None
    labels = meta.get("labels")
    # Labels travel in every event: a sidecar whose labels no document could carry is refused here, not later.
    problem = label_problem(labels) if isinstance(labels, list) else "is not a list of class names"
    if problem:
        raise ModelError(f"{side}: 'labels' {problem}")
    if meta.get("color", "gray") not in ("gray", "bgr", "rgb"):
        raise ModelError(f"{side}: 'color' must be gray, bgr or rgb")
    calibration = meta.get("calibration", {})
    temperature = calibration.get("temperature", 1.0) if isinstance(calibration, dict) else None
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0.05 <= temperature <= 20:
        raise ModelError(f"{side}: 'calibration' must hold a temperature between 0.05 and 20")
    bias = calibration.get("bias", [0.0] * len(labels))
    if not isinstance(bias, list) or len(bias) != len(labels) or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and -20 <= b <= 20 for b in bias):
        raise ModelError(f"{side}: 'calibration' bias must be one number from -20 to 20 per label")
    return meta


class EmotionClassifier:
    """Classify face crops into emotions; one interpreter call per batch of faces."""

    def __init__(self, path: str | Path | None = None, threads: int = 1) -> None:
        self.path = Path(path) if path else default_model_path()
        if not self.path.is_file():
            raise ModelError(f"{self.path}: no such model file")
        self.meta = read_sidecar(self.path)
        self.labels: tuple[str, ...] = tuple(self.meta["labels"])
        self.color: str = self.meta.get("color", "gray")
        # Pixels (0..255) become model inputs as pixel * scale + offset before quantization.
        norm = self.meta.get("normalization", {})
        self._norm_scale = float(norm.get("scale", 1.0))
        self._norm_offset = float(norm.get("offset", 0.0))
        # The model's outputs are probabilities unless the sidecar says they are logits.
        self._softmax = self.meta.get("output", "probabilities") == "logits"
        # Calibration (training/calibrate.py): log-scores over a temperature plus a bias per label, so that a
        # face called 0.8 is right about 80% of the time.
        calibration = self.meta.get("calibration", {})
        self.temperature = float(calibration.get("temperature", 1.0))
        self.bias = np.asarray(calibration.get("bias", [0.0] * len(self.labels)), np.float32)
        try:
            with _quiet_stderr():
                self._interp = _interpreter_class()(model_path=str(self.path), num_threads=threads)
                self._interp.allocate_tensors()
        except ModelError:
            raise
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{self.path}: not a usable TFLite model ({str(e).splitlines()[0]})") from None
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        shape = self._in["shape"]
        if len(shape) != 4 or shape[3] not in (1, 3):
            raise ModelError(f"{self.path}: input shape {list(shape)} is not (batch, height, width, 1 or 3)")
        if (shape[3] == 1) != (self.color == "gray"):
            raise ModelError(f"{self.path}: input has {shape[3]} channels but the sidecar says {self.color}")
        self.input_size = (int(shape[2]), int(shape[1]))
        n_out = int(self._out["shape"][-1])
        if n_out != len(self.labels):
            raise ModelError(f"{self.path}: the model has {n_out} outputs but the sidecar names "
                             f"{len(self.labels)} labels")
        self._shape: tuple[int, ...] = tuple(int(v) for v in shape)  # the input shape allocated now
        log.debug("loaded %s: input %s %s, labels %s", self.path, list(shape), self._in["dtype"], self.labels)

    def __enter__(self) -> EmotionClassifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the interpreter."""
        self._interp = None

    def _prepare(self, crop: np.ndarray) -> np.ndarray:
        """A uint8 crop (gray, BGR or BGRA, any size) as the model's input pixels, 0..255 float."""
        if crop.dtype != np.uint8 or crop.ndim not in (2, 3) or 0 in crop.shape[:2]:
            raise ValueError(f"a face crop must be a non-empty uint8 image, got {crop.dtype} {crop.shape}")
        if crop.ndim == 3 and crop.shape[2] == 1:
            crop = crop[..., 0]
        if self.color == "gray":
            if crop.ndim == 3:
                crop = cv2.cvtColor(crop, cv2.COLOR_BGRA2GRAY if crop.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
        else:
            if crop.ndim == 2:
                crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
            elif crop.shape[2] == 4:
                crop = cv2.cvtColor(crop, cv2.COLOR_BGRA2BGR)
            if self.color == "rgb":
                crop = crop[..., ::-1]
        interp = cv2.INTER_AREA if crop.shape[0] > self.input_size[1] else cv2.INTER_LINEAR
        out = cv2.resize(crop, self.input_size, interpolation=interp).astype(np.float32)
        out = out * self._norm_scale + self._norm_offset
        return out[..., None] if out.ndim == 2 else out

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        dtype = self._in["dtype"]
        scale, zero = self._in["quantization"]
        if dtype == np.float32:
            return x.astype(np.float32)
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self._interp is None:
            raise RuntimeError("the classifier is closed")
        idx = self._in["index"]
        if self._shape != batch.shape:
            self._interp.resize_tensor_input(idx, batch.shape, strict=False)
            self._interp.allocate_tensors()
            self._shape = batch.shape
        self._interp.set_tensor(idx, batch)
        self._interp.invoke()
        raw = self._interp.get_tensor(self._out["index"])
        scale, zero = self._out["quantization"]
        out = raw.astype(np.float32) if not scale else (raw.astype(np.float32) - zero) * scale
        return out

    def predict(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities (N, len(labels)) for N uint8 face crops, in the order of `labels`."""
        if len(crops) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        batch = self._quantize(np.stack([self._prepare(c) for c in crops]))
        try:
            out = self._run(batch)
        except (ValueError, RuntimeError):
            # A model with a fixed batch size runs one face at a time (resized back from the failed attempt).
            self._shape = ()
            out = np.concatenate([self._run(b[None]) for b in batch])
        if not self._softmax and self.temperature == 1.0 and not self.bias.any():
            return out.astype(np.float32)
        if not self._softmax:
            # int8 probabilities come in steps of 1/256 down to 0: a floor keeps their logarithm finite.
            out = np.log(np.maximum(out, 1 / 512))
        out = out / self.temperature + self.bias
        e = np.exp(out - out.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
