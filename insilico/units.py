"""Canvas pixels and degrees of visual angle.

Stimuli are rendered in canvas pixels; sizes and spatial frequencies are reported in degrees too,
with ``pixels_per_degree`` (ppd) of the canvas: ``size_deg = size / ppd``, ``sf_cpd = sf * ppd``
(cycles per degree), and L2 norms ``norm_px = norm_deg * ppd`` (the sum of squared pixels is
ppd^2 times the integral of the squared image over the visual field, in degrees^2).

Default ppd: the Sensorium / digital-twin screen (DT methods: "55 x 31 cm at a distance of 15 cm,
covering roughly 120 x 90 degrees"), the images filling it. A flat screen has no single ppd; the
default is the one at the screen's centre, ``W / 55 cm * 15 cm * pi / 180`` per degree (where
small stimuli on RFs near the centre of the screen are measured): 1.22 px/deg for the 144 x 256
stored images, 0.305 px/deg on the 36 x 64 canvas (3.3 degrees per pixel). It applies only to
images with the screen's aspect ratio (55 / 31, to 1 %); any other scan needs its own
``pixels_per_degree``.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

__all__ = [
    "SCREEN_CM",
    "SCREEN_DISTANCE_CM",
    "canvas_pixels_per_degree",
    "in_degrees",
    "sensorium_pixels_per_degree",
    "to_pixels",
]

#: Screen height, width (cm) and eye distance (cm) of the Sensorium / DT recordings.
SCREEN_CM = (31.0, 55.0)
SCREEN_DISTANCE_CM = 15.0


def sensorium_pixels_per_degree(image_shape, where: str = "images") -> float:
    """Pixels per degree at the screen centre for images (H, W) that fill the Sensorium screen.

    ValueError naming ``where`` when the images do not have the screen's aspect ratio (then the
    default does not apply and the scan needs its own pixels per degree)."""
    h, w = (int(s) for s in image_shape)
    screen = SCREEN_CM[1] / SCREEN_CM[0]
    if abs((w / h) / screen - 1) > 0.01:
        raise ValueError(
            f"{where}: images of {h} x {w} do not have the Sensorium screen's aspect ratio "
            f"({SCREEN_CM[0]:g} x {SCREEN_CM[1]:g} cm), so no default pixels per degree applies; "
            "set [insilico] pixels_per_degree"
        )
    return w / SCREEN_CM[1] * SCREEN_DISTANCE_CM * math.pi / 180


def canvas_pixels_per_degree(stored_ppd: float | None, stored_shape, canvas, where: str) -> float:
    """Canvas pixels per degree from the stored images' (``stored_ppd``; None or 0: the Sensorium
    default for ``stored_shape``) and the canvas (H, W) they are area-averaged onto."""
    if not stored_ppd:
        stored_ppd = sensorium_pixels_per_degree(stored_shape, where)
    if stored_ppd < 0:
        raise ValueError(f"{where}: pixels_per_degree must be > 0, got {stored_ppd!r}")
    return float(stored_ppd) * int(canvas[1]) / int(stored_shape[1])


#: Parameters in pixels -> (name in degrees, exponent of ppd in the conversion).
_DEGREES = {
    "size": ("size_deg", -1),
    "sf": ("sf_cpd", 1),
    "sigma_center": ("sigma_center_deg", -1),
    "sigma_surround": ("sigma_surround_deg", -1),
}


def in_degrees(ds: xr.Dataset, ppd: float) -> xr.Dataset:
    """A search Dataset (``insilico.search``) with its sizes and spatial frequencies added in
    degrees: ``size_deg``, ``sf_cpd``, ``sigma_center_deg``, ``sigma_surround_deg`` (those whose
    pixel variable it has, also ``cluster_``-prefixed ones), and ``attrs['pixels_per_degree']``."""
    out = ds.copy()
    for name in list(ds.data_vars):
        base = name.removeprefix("cluster_")
        if base in _DEGREES:
            new, power = _DEGREES[base]
            prefix = name[: len(name) - len(base)]
            out[prefix + new] = ds[name] * float(ppd) ** power
    out.attrs["pixels_per_degree"] = float(ppd)
    return out


def to_pixels(values, ppd: float) -> tuple:
    """Lengths in degrees -> canvas pixels (a tuple of floats)."""
    return tuple(float(v) for v in np.asarray(values, dtype=np.float64).ravel() * float(ppd))
