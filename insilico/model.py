"""The response-model contract shared by the twin and the virtual-V1 simulator.

A *response model* maps a batch of images on the canvas to non-negative rates of all its neurons::

    model(images (B, 1, H, W) float32) -> (B, N)

and carries these attributes:

- ``image_shape`` (H, W): its canvas, pixels. Every stimulus is rendered on it;
- ``pixels_per_degree``: canvas pixels per degree of visual angle (:mod:`insilico.units`);
  read only where a default is given in degrees (grids, sizes, norms);
- ``rf_positions`` (N, 2): receptive-field centres, columns ``(x, y)`` = (column, row), pixels;
- ``preferred_orientations`` (N,): radians, or ``None`` (the twin, before it has been estimated).

Stimuli are in standardized units (0 = mean gray). "Centred" means at :func:`canvas_center`.

Helpers here keep the rest of ``insilico`` free of model specifics: ``own_responses`` evaluates
images that each belong to one neuron and keeps only that neuron's output (the "diagonal").
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from twin.model import canvas_center  # noqa: F401  (re-exported: the one canvas centre)

from .units import sensorium_pixels_per_degree

#: ``respond(stimuli_centred (B, 1, H, W)) -> (B, N)``: response of every neuron ``n`` to stimulus
#: ``b`` moved onto neuron ``n``'s own RF. The direct path shifts and evaluates (see
#: :func:`insilico.search.direct_respond`); the twin's fast path lets its readout do the moving.
RespondFn = Callable[[torch.Tensor], torch.Tensor]

#: ``respond_own(images (M, 1, H, W)) -> (M,)``: response of neuron ``m`` to image ``m``.
RespondOwnFn = Callable[[torch.Tensor], torch.Tensor]


@runtime_checkable
class ResponseModel(Protocol):
    """Anything with ``__call__(images (B,1,H,W)) -> (B,N)``, its canvas and the RF attributes."""

    image_shape: tuple[int, int]  # (H, W) pixels
    pixels_per_degree: float  # canvas pixels per degree of visual angle
    rf_positions: np.ndarray  # (N, 2) x = column, y = row, pixels
    preferred_orientations: np.ndarray | None  # (N,) radians, or None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:  # (B,1,H,W) -> (B,N)
        ...


def image_shape(model) -> tuple[int, int]:
    """The model's canvas ``(H, W)`` (``model.image_shape``); a clear error if it has none."""
    shape = getattr(model, "image_shape", None)
    if shape is None or len(shape) != 2:
        raise ValueError(
            f"{type(model).__name__} has no image_shape (H, W): a ResponseModel names its canvas"
        )
    return int(shape[0]), int(shape[1])


def pixels_per_degree(model) -> float:
    """The model's canvas pixels per degree of visual angle; a clear error if it has none."""
    ppd = getattr(model, "pixels_per_degree", None)
    if ppd is None or not ppd > 0:
        raise ValueError(
            f"{type(model).__name__} has no pixels_per_degree (got {ppd!r}): give the model one "
            "(insilico.units) or pass the stimulus sizes in canvas pixels"
        )
    return float(ppd)


def model_device(model) -> torch.device:
    """The device of a model's parameters (CPU when it has none)."""
    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    dev = getattr(model, "device", None)
    return torch.device(dev) if dev is not None else torch.device("cpu")


def rf_positions(model, positions=None) -> np.ndarray:
    """``positions`` if given, else ``model.rf_positions``, as float (N, 2); clear error
    otherwise."""
    pos = positions if positions is not None else getattr(model, "rf_positions", None)
    if pos is None:
        raise ValueError("no RF positions: pass positions=(N, 2) or give the model rf_positions")
    pos = np.asarray(pos, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise ValueError(f"rf_positions must have shape (N, 2) (x, y); got {pos.shape}")
    return pos


def preferred_orientations(model, orientations=None, n: int | None = None) -> np.ndarray:
    """``orientations`` if given, else ``model.preferred_orientations`` (N,); clear error
    otherwise."""
    ori = (
        orientations if orientations is not None else getattr(model, "preferred_orientations", None)
    )
    if ori is None:
        raise ValueError(
            "no preferred orientations: pass orientations=(N,) (e.g. the per-neuron optimal Gabor "
            "orientations) or give the model preferred_orientations"
        )
    ori = np.asarray(ori, dtype=np.float64)
    if ori.ndim != 1 or (n is not None and ori.shape[0] != n):
        raise ValueError(f"preferred orientations must have shape ({n},); got {ori.shape}")
    return ori


def cluster_weights(inv: np.ndarray, weights=None) -> np.ndarray:
    """(N,) weight of each neuron in its cluster's mean: ``weights`` (N,) positive and finite
    (default equal), divided by their sum over the neuron's cluster; ``inv`` (N,): cluster index.
    For the twin, weights = 1 / each neuron's recorded-response s.d. make a cluster's objective
    the mean standardised response, so that neurons with large traces do not dominate it."""
    inv = np.asarray(inv)
    w = np.ones(len(inv)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != inv.shape or not np.all(np.isfinite(w) & (w > 0)):
        raise ValueError(f"weights must be ({len(inv)},) positive and finite, one per neuron")
    return w / np.bincount(inv, weights=w)[inv]


def own_responses(model, images: torch.Tensor, neuron_index) -> torch.Tensor:
    """Response of neuron ``neuron_index[m]`` to ``images[m]``: (M,1,H,W), (M,) -> (M,).

    Uses ``model.respond_own(images, neuron_index)`` when the model offers it (cheaper: one
    readout per image), else evaluates all neurons and gathers.
    """
    idx = torch.as_tensor(neuron_index, dtype=torch.long, device=images.device)
    fn = getattr(model, "respond_own", None)
    if callable(fn):
        return fn(images, idx)
    out = model(images)
    if out.ndim != 2 or out.shape[0] != images.shape[0]:
        raise ValueError(
            f"model must return (B, N); got {tuple(out.shape)} for B={images.shape[0]}"
        )
    return out.gather(1, idx.to(out.device)[:, None])[:, 0]


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module):
    """Run ``module`` in eval mode (no sampling noise, running statistics), then restore it."""
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


class NeuronSubsetModel:
    """What the adapters that show (some of) a model's neurons as a ResponseModel share: the
    neuron subset (``_index``: None for all, ``n_neurons``), settable preferred orientations,
    and the canvas's pixels per degree (``_ppd``; None: the Sensorium screen's). Subclasses
    define ``image_shape``, ``rf_positions`` and ``__call__``."""

    _canvas_name = "the model's canvas"

    def _select_neurons(self, n_all: int, neurons: Sequence[int] | None) -> None:
        """Keep the neurons at indices ``neurons`` (each in [0, n_all)), in that order."""
        if neurons is None:
            self._index, self.n_neurons = None, n_all
            return
        idx = np.asarray(neurons, dtype=np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= n_all):
            raise ValueError(
                f"{type(self).__name__}: neuron indices must lie in [0, {n_all}); "
                f"got min {idx.min()}, max {idx.max()}"
            )
        self._index, self.n_neurons = idx, len(idx)

    @property
    def pixels_per_degree(self) -> float:
        """Canvas pixels per degree of visual angle (given, or the Sensorium screen's)."""
        if self._ppd is None:
            return sensorium_pixels_per_degree(self.image_shape, self._canvas_name)
        return float(self._ppd)

    @property
    def preferred_orientations(self) -> np.ndarray | None:
        """(N,) radians, or None."""
        return self._pref

    @preferred_orientations.setter
    def preferred_orientations(self, value):
        if value is None:
            self._pref = None
            return
        v = np.asarray(getattr(value, "values", value), dtype=np.float64).ravel()
        if v.shape != (self.n_neurons,):
            raise ValueError(
                f"preferred_orientations must have shape ({self.n_neurons},); got {v.shape}"
            )
        self._pref = v
