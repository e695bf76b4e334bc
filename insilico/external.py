"""A model trained elsewhere (a neuralpredictors / nnfabrik ``FiringRateEncoder``, or any
``nn.Module`` called as ``module(images, data_key=scan)`` with a Gaussian readout per scan) as
an insilico ResponseModel, direct path only.

``ExternalResponseModel(module, data_key, image_shape)``::

    model(images (B, 1, H, W)) -> (B, N)     module(images, data_key=data_key), eval mode
    model.rf_positions                       (N, 2) canvas pixels (x = column, y = row)
    model.preferred_orientations             (N,) radians or None (settable)
    model.image_shape                        (H, W)

Stimulus units: the module must take images standardized as insilico renders them (0 = mean
gray, 1 = one standard deviation of the training pixels), which is what the Sensorium loaders'
``NeuroNormalizer`` feeds a neuralpredictors model ((x - mean) / std over all pixels).

RF positions come from the readout's ``mu`` (neuralpredictors' ``FullGaussian2d`` convention:
``module.readout[data_key].mu`` of shape (1, N, 1, 2), ``(x, y)`` in [-1, 1] over the core's
output map, read with ``grid_sample(align_corners=True)`` by default), mapped to canvas pixels
by :func:`grid_to_canvas`, or are passed as ``rf_positions=`` (N, 2) for other readouts.
No fast path: the module declares no equivariance that insilico could use.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .model import NeuronSubsetModel, eval_mode

__all__ = ["ExternalResponseModel", "grid_to_canvas", "readout_of"]


def readout_of(module: nn.Module, data_key: str) -> nn.Module:
    """``module.readout[data_key]`` (neuralpredictors' MultiReadout, a ModuleDict)."""
    readouts = getattr(module, "readout", None)
    if readouts is None or not hasattr(readouts, "keys"):
        raise ValueError(
            f"{type(module).__name__} has no per-scan readout dict `readout`; "
            "pass rf_positions= (N, 2) canvas pixels"
        )
    if data_key not in readouts.keys():
        raise KeyError(f"unknown data_key {data_key!r}; the model has {sorted(readouts.keys())}")
    return readouts[data_key]


def grid_to_canvas(mu, feature_shape, image_shape, align_corners: bool = True) -> np.ndarray:
    """Readout grid positions (N, 2) (x, y) in [-1, 1] -> canvas pixels (N, 2) (x, y).

    feature_shape: (h, w) of the core's output map; image_shape: (H, W) of the canvas. The map's
    pixels are placed on the canvas by one of the two geometries a convolutional core has:
    the same grid cropped symmetrically (valid convolutions with odd kernels: H - h = W - w,
    even; map pixel i = canvas pixel i + (H - h) / 2), or the canvas downsampled by an integer
    factor d = H / h = W / w (map pixel i covers canvas pixels d*i .. d*i + d - 1). Anything
    else, or a shape that fits both, raises: pass the RF positions yourself.
    """
    mu = np.asarray(mu, dtype=np.float64).reshape(-1, 2)
    (h, w), (big_h, big_w) = (tuple(int(s) for s in feature_shape), tuple(image_shape))
    size = np.array([w, h], dtype=np.float64)
    grid = (mu + 1) / 2 * (size - 1) if align_corners else ((mu + 1) * size - 1) / 2
    crop_h, crop_w = big_h - h, big_w - w
    crop = crop_h == crop_w and crop_h >= 0 and crop_h % 2 == 0
    factor = big_h // h if big_h % h == 0 and big_w % w == 0 and big_h // h == big_w // w else 0
    if crop and factor and crop_h:
        raise ValueError(
            f"a {h} x {w} map on the {big_h} x {big_w} canvas could be cropped or downsampled; "
            "pass rf_positions= (N, 2) canvas pixels"
        )
    if crop:
        return grid + crop_h / 2
    if factor:
        return (grid + 0.5) * factor - 0.5
    raise ValueError(
        f"cannot place a {h} x {w} feature map on the {big_h} x {big_w} canvas (neither a "
        "symmetric crop nor an integer downsampling); pass rf_positions= (N, 2) canvas pixels"
    )


class ExternalResponseModel(NeuronSubsetModel):
    """One scan (``data_key``) of an external model as a ResponseModel; see the module docstring.

    module: called as ``module(images, data_key=data_key)`` -> (B, N) rates >= 0;
    image_shape: (H, W) canvas the module takes; rf_positions: (N, 2) canvas pixels, or None to
    read ``module.readout[data_key].mu``; feature_shape: (h, w) of the core's output map for
    that (default: the readout's ``in_shape[1:]``); neurons: optional subset of neuron indices;
    pixels_per_degree: of the canvas (default: images filling the Sensorium screen,
    ``insilico.units.sensorium_pixels_per_degree``).
    """

    def __init__(
        self,
        module: nn.Module,
        data_key: str,
        image_shape: Sequence[int],
        rf_positions=None,
        preferred_orientations=None,
        feature_shape: Sequence[int] | None = None,
        neurons: Sequence[int] | None = None,
        pixels_per_degree: float | None = None,
    ):
        self.module, self.data_key = module, data_key
        self.image_shape = tuple(int(s) for s in image_shape)
        self._ppd = pixels_per_degree
        if rf_positions is None:
            readout = readout_of(module, data_key)
            mu = getattr(readout, "mu", None)
            if mu is None:
                raise ValueError(
                    f"the readout of {data_key!r} ({type(readout).__name__}) has no Gaussian "
                    "mean `mu`; pass rf_positions= (N, 2) canvas pixels"
                )
            shape = feature_shape or tuple(readout.in_shape)[1:]
            align = getattr(readout, "align_corners", True)
            rf_positions = grid_to_canvas(mu.detach().cpu(), shape, self.image_shape, align)
        pos = np.asarray(rf_positions, dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] != 2:
            raise ValueError(f"rf_positions must have shape (N, 2) (x, y); got {pos.shape}")
        self._select_neurons(len(pos), neurons)
        self._all_positions = pos
        self._pref = None
        self.preferred_orientations = preferred_orientations

    @property
    def rf_positions(self) -> np.ndarray:
        """(N, 2) float64, (x, y) = (column, row) canvas pixels."""
        pos = self._all_positions
        return pos if self._index is None else pos[self._index]

    def parameters(self):
        return self.module.parameters()

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def subset(self, neurons: Sequence[int]) -> ExternalResponseModel:
        """The same model restricted to ``neurons`` (indices into this model's neurons)."""
        idx = np.asarray(neurons, dtype=np.int64).ravel()
        glob = idx if self._index is None else self._index[idx]
        pref = None if self._pref is None else self._pref[idx]
        return ExternalResponseModel(
            self.module, self.data_key, self.image_shape, self._all_positions, pref, None, glob
        )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Standardized images (B, 1, H, W) -> rates (B, N)."""
        if tuple(images.shape[-2:]) != self.image_shape:
            raise ValueError(
                f"images are {tuple(images.shape[-2:])}; the model takes {self.image_shape}"
            )
        with eval_mode(self.module):
            out = self.module(images.to(self.device, torch.float32), data_key=self.data_key)
        if out.ndim != 2 or out.shape[1] != len(self._all_positions):
            raise ValueError(
                f"module(images, data_key={self.data_key!r}) returned {tuple(out.shape)}; "
                f"expected (B, {len(self._all_positions)})"
            )
        return out if self._index is None else out[:, torch.as_tensor(self._index)]
