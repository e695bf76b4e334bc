"""In-memory recording of one scan: images shown, responses, tiers."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["TIERS", "ScanData", "standardization", "to_canvas"]

TIERS = ("train", "validation", "test")


@dataclass
class ScanData:
    """One scan's trials.

    Attributes:
        name: scan name (key of the model's readout).
        images: (T, 1, H, W) float32, raw stored units (Sensorium: 0-255).
        responses: (T, N) float32, non-negative activity per trial and neuron.
        tiers: (T,) str, each in {"train", "validation", "test"}.
        image_ids: (T,) int64; repeats of one image share an id (test repeats).
        behavior: (T, B) float32 recorded units (Sensorium: pupil dilation, its derivative,
            running speed), or None.
        pupil_center: (T, 2) float32 recorded units (eye-camera pixels), or None.
    """

    name: str
    images: np.ndarray
    responses: np.ndarray
    tiers: np.ndarray
    image_ids: np.ndarray
    behavior: np.ndarray | None = None
    pupil_center: np.ndarray | None = None

    def __post_init__(self):
        self.images = np.asarray(self.images, dtype=np.float32)
        self.responses = np.asarray(self.responses, dtype=np.float32)
        self.tiers = np.asarray(self.tiers).astype(str)
        self.image_ids = np.asarray(self.image_ids).astype(np.int64)
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"ScanData.name must be a non-empty str, got {self.name!r}")
        if self.images.ndim != 4 or self.images.shape[1] != 1:
            raise ValueError(f"ScanData.images must be (T, 1, H, W), got shape {self.images.shape}")
        t = self.images.shape[0]
        if self.responses.ndim != 2 or self.responses.shape[0] != t:
            raise ValueError(
                f"ScanData.responses must be (T={t}, N), got shape {self.responses.shape}"
            )
        for field in ("tiers", "image_ids"):
            shape = getattr(self, field).shape
            if shape != (t,):
                raise ValueError(f"ScanData.{field} must be (T={t},), got shape {shape}")
        self._check_trial_inputs(t)
        for field in ("images", "responses"):
            if not np.isfinite(getattr(self, field)).all():
                raise ValueError(f"ScanData.{field} of scan {self.name!r} contains NaN or inf")
        unknown = set(np.unique(self.tiers)) - set(TIERS)
        if unknown:
            raise ValueError(
                f"ScanData.tiers has unknown values {sorted(unknown)}; allowed {TIERS}"
            )

    def _check_trial_inputs(self, t: int) -> None:
        """behavior (T, B) and pupil_center (T, 2): float32 and finite, or None."""
        for field, width in (("behavior", None), ("pupil_center", 2)):
            value = getattr(self, field)
            if value is None:
                continue
            value = np.asarray(value, dtype=np.float32)
            if value.ndim != 2 or value.shape[0] != t or width not in (None, value.shape[1]):
                raise ValueError(
                    f"ScanData.{field} of scan {self.name!r} must be (T={t}, "
                    f"{width or 'B'}), got shape {value.shape}"
                )
            if not np.isfinite(value).all():
                raise ValueError(f"ScanData.{field} of scan {self.name!r} contains NaN or inf")
            setattr(self, field, value)

    @property
    def n_neurons(self) -> int:
        return self.responses.shape[1]

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W)."""
        return tuple(self.images.shape[2:])

    def on_canvas(self, canvas) -> ScanData:
        """The same trials with images area-averaged onto the model canvas (H, W) (`to_canvas`)."""
        images = to_canvas(self.images, canvas, f"scan {self.name!r}")
        return replace(self, images=images)

    def mask(self, tier: str) -> np.ndarray:
        """Boolean (T,) selecting the trials of one tier."""
        if tier not in TIERS:
            raise ValueError(f"unknown tier {tier!r}; allowed {TIERS}")
        return self.tiers == tier

    def select(self, tier: str) -> ScanData:
        """The trials of one tier as a new ScanData (same name)."""
        m = self.mask(tier)
        return ScanData(
            self.name,
            self.images[m],
            self.responses[m],
            self.tiers[m],
            self.image_ids[m],
            None if self.behavior is None else self.behavior[m],
            None if self.pupil_center is None else self.pupil_center[m],
        )

    def response_scale(self) -> np.ndarray:
        """(N,) float32: each neuron's train-tier response s.d., floored at 1 % of the mean s.d.
        over neurons (neuralpredictors' ``NeuroNormalizer``; its threshold keeps a silent neuron
        from being divided by ~0). Responses / scale are the twin's standardized responses."""
        train = self.responses[self.mask("train")]
        if not (len(train) and train.std(0).mean() > 0):
            raise ValueError(
                f"scan {self.name!r}: no train-tier response variance to standardize with"
            )
        return standardization(train)[1]


def standardization(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (C,), s.d. (C,)) float32 of train-tier values (T, C); an s.d. below 1 % of the
    channels' mean s.d. (or 0) is raised to it (neuralpredictors' ``NeuroNormalizer``), or to 1
    when every channel is constant."""
    values = np.asarray(values, dtype=np.float64)
    sd = values.std(0)
    floor = 0.01 * sd.mean() if sd.mean() > 0 else 1.0
    return values.mean(0).astype(np.float32), np.maximum(sd, floor).astype(np.float32)


def to_canvas(images: np.ndarray, canvas, where: str = "images", chunk: int = 512) -> np.ndarray:
    """Area-average images (T, 1, H, W) onto the model canvas (h, w): (T, 1, h, w) float32.

    Each canvas pixel is the mean of the stored pixels it covers (`adaptive_avg_pool2d`; exact
    block means when h divides H and w divides W), so the canvas shows the same field of view.
    The canvas must have the images' aspect ratio (H * w == W * h) and be no larger than them;
    otherwise a ValueError names ``where`` and both shapes. Images already on the canvas are
    returned as they are.
    """
    images = np.asarray(images, dtype=np.float32)
    h, w = (int(s) for s in canvas)
    big_h, big_w = images.shape[-2:]
    if h < 1 or w < 1 or h * big_w != w * big_h or h > big_h or w > big_w:
        raise ValueError(
            f"{where}: images of {big_h} x {big_w} cannot be area-averaged onto the model canvas "
            f"{h} x {w} (the canvas needs the images' aspect ratio and at most their size); "
            "set [model] canvas accordingly"
        )
    if (h, w) == (big_h, big_w):
        return images
    out = [
        F.adaptive_avg_pool2d(torch.from_numpy(images[s : s + chunk]), (h, w)).numpy()
        for s in range(0, len(images), chunk)
    ]
    return np.concatenate(out) if out else np.zeros((0, 1, h, w), np.float32)
