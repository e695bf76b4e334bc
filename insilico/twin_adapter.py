"""A trained :class:`twin.model.Twin` as an insilico ResponseModel, with the equivariant fast path.

``TwinResponseModel(twin, scan)`` is a ResponseModel (``model(images (B,1,H,W)) -> (B,N)``,
``rf_positions`` (N,2) from the readout, settable ``preferred_orientations`` (N,)) that works with
every function of :mod:`insilico.search`, :mod:`insilico.experiments` and :mod:`insilico.mei`.

Fast path (DESIGN "Scale: the equivariant fast path")
----------------------------------------------------
``fast_respond()`` returns ``respond(stimuli_centred (B,1,H,W)) -> (B,N)``: the core runs once on
stimuli centred at :attr:`TwinResponseModel.center` and the readout moves them onto every
neuron's RF (``Twin.at_rf``). The centre is the one the twin's readout assumes and the one
insilico renders centred stimuli at, :func:`twin.model.canvas_center` = ``((W-1)/2, (H-1)/2)``
((31.5, 17.5) on a 36 x 64 canvas); ``center=model.center`` names it explicitly.

Exactness. With the Gaussian readout, neuron n's direct response to a stimulus rendered at its RF
mu_n is the bilinear read, at mu_n, of core features that depend on the stimulus only through
(pixel - mu_n). The fast path reads the same function bilinearly at the canvas centre. So:

* when mu_n - center is an integer vector (mu_n on a half-integer pixel position on the default
  canvas) the two agree to float precision, provided the canvas edge does not act: the core's
  receptive field around the read pixels lies inside the canvas or, with gray padding, the
  stimulus widened by the hidden layers' reach does (see the border rule);
* for other (sub-pixel) mu_n they differ by the difference of two bilinear interpolations of a
  smooth function (sub-pixel phase frac(mu_n) vs 0.5): second order in the feature maps' spatial
  frequency. tests/test_fast_path.py states and checks the tolerance.

Border rule. ``border_mask(margin, extent)`` flags neurons whose RF lies within ``margin + extent``
pixels of the canvas edge. With the core's gray padding (``twin.core``) a stimulus on gray sees
the canvas edge only where its own support, widened by the hidden layers' reach, crosses it: the
default margin is ``Twin.hidden_reach`` and ``extent`` the stimulus's radius (0 by default:
compact stimuli; the error of larger ones grows with the part of them that lies that close to
the edge; size tuning passes its largest Gabor's radius, ``insilico.stimuli.gabor_radius``, and so
runs direct). With zero padding the default margin is the whole core's reach (``Twin.reach``),
wherever the stimulus lies. Add the readout's own spatial extent for the factorized readout.
Flagged neurons fall back to the direct path: :func:`merge` combines tables or search Datasets,
and :meth:`TwinResponseModel.hybrid_respond` is a respond callable that does it. The searches
(:func:`optimal_gabor` / :func:`optimal_dog`) rank every neuron's grid by the fast path and
re-score the best few by the direct path: ``REFINE`` per interior neuron, ``BORDER_REFINE`` per
border neuron (the whole grid direct for border neurons with ``border_refine=None``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import xarray as xr

from . import experiments, search
from .model import NeuronSubsetModel, RespondFn, eval_mode, pixels_per_degree
from .stimuli import gabor_radius

__all__ = [
    "TwinResponseModel",
    "ScanStack",
    "has_fast_path",
    "merge",
    "per_neuron_experiment",
    "size_contrast_tuning",
    "run_battery",
    "optimal_gabor",
    "optimal_dog",
]


class TwinResponseModel(NeuronSubsetModel):
    """One scan of a trained Twin as a ResponseModel (see the module docstring).

    twin: a :class:`twin.model.Twin`; scan: the readout's name; preferred_orientations: (N,)
    radians or None (set later, e.g. ``model.preferred_orientations = ds.orientation.values``
    from the per-neuron optimal Gabors); neurons: optional subset of the scan's neuron indices
    (the model then has len(neurons) neurons, in that order); pixels_per_degree: of the twin's
    canvas (``twin.image_shape``); None: the Sensorium screen's (:mod:`insilico.units`), an error
    when first needed if the canvas does not have that screen's aspect ratio.

    Rates are in recorded response units (the twin's output x ``Twin.response_scale``), at the
    training-mean behaviour and pupil centre (`twin.behavior`).

    Evaluation always runs the twin in eval mode (no readout sampling noise, running batch-norm
    statistics) and restores its previous mode. Calls are differentiable (MEIs); the searches
    wrap them in ``torch.no_grad``.
    """

    _canvas_name = "the twin's canvas"

    def __init__(
        self,
        twin,
        scan: str,
        preferred_orientations=None,
        neurons: Sequence[int] | None = None,
        pixels_per_degree: float | None = None,
    ):
        if scan not in twin.readouts:
            raise KeyError(
                f"TwinResponseModel: unknown scan {scan!r}; twin has {sorted(twin.readouts)}"
            )
        self.twin, self.scan = twin, scan
        self.readout = twin.readouts[scan]
        self._select_neurons(self.readout.n_neurons, neurons)
        self._pref = None
        self.preferred_orientations = preferred_orientations
        self._ppd = pixels_per_degree

    # ---- attributes of the ResponseModel protocol ---------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W): the twin's canvas."""
        return tuple(self.twin.image_shape)

    @property
    def rf_positions(self) -> np.ndarray:
        """(N, 2) float64, (x, y) = (column, row) pixels, from the readout."""
        pos = np.asarray(self.twin.rf_positions(self.scan), dtype=np.float64)
        return pos if self._index is None else pos[self._index]

    @property
    def device(self) -> torch.device:
        return self.twin.device

    def parameters(self):
        return self.twin.parameters()

    @property
    def center(self) -> tuple[float, float]:
        """(x, y) at which the fast path assumes centred stimuli (the readout's convention)."""
        return self.twin.center

    def _neuron_tensor(self) -> torch.Tensor | None:
        return None if self._index is None else torch.as_tensor(self._index, device=self.device)

    def _global(self, neuron_index) -> torch.Tensor:
        idx = torch.as_tensor(neuron_index, dtype=torch.long, device=self.device)
        if self._index is not None:
            idx = self._neuron_tensor()[idx]
        return idx

    def subset(self, neurons: Sequence[int]) -> TwinResponseModel:
        """The same twin restricted to ``neurons`` (indices into this model's neurons)."""
        idx = np.asarray(neurons, dtype=np.int64).ravel()
        glob = idx if self._index is None else self._index[idx]
        pref = None if self._pref is None else self._pref[idx]
        return TwinResponseModel(self.twin, self.scan, pref, glob, self._ppd)

    # ---- direct path ---------------------------------------------------------------------------
    def _scale(self) -> torch.Tensor:
        """(N,) recorded response units per twin unit of this model's neurons
        (``Twin.response_scale``)."""
        scale = self.twin.response_scale(self.scan)
        return scale if self._index is None else scale[self._neuron_tensor()]

    @property
    def response_sd(self) -> np.ndarray:
        """(N,) float64: recorded response units per twin unit of each neuron (its train-tier
        s.d., or 1 where the twin was trained on recorded units)."""
        return self._scale().detach().cpu().numpy().astype(np.float64)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Standardized images (B,1,H,W) -> rates (B,N) in recorded units, the full model (at the
        training-mean behaviour and pupil centre)."""
        with eval_mode(self.twin):
            out = self.twin(images.to(self.device, torch.float32), self.scan)
        out = out if self._index is None else out[:, self._neuron_tensor()]
        return out * self._scale()

    def respond_own(self, images: torch.Tensor, neuron_index) -> torch.Tensor:
        """Rate of neuron ``neuron_index[m]`` to ``images[m]``: (M,1,H,W), (M,) -> (M,).

        The core runs on every image (only in the cone of the neuron's read point, where the
        readout allows: `Twin.own_drive`), the readout only for that image's own neuron (for
        batched MEIs and the direct search). Equals ``self(images).gather(1, idx)``.
        """
        idx = self._global(neuron_index)
        with eval_mode(self.twin):
            drive = self.twin.own_drive(images.to(self.device, torch.float32), self.scan, idx)
        return self.twin.output(drive) * self.twin.response_scale(self.scan)[idx]

    # ---- fast path -----------------------------------------------------------------------------
    def fast_respond(self) -> RespondFn:
        """``respond(stimuli_centred (B,1,H,W)) -> (B,N)``: core once, readout moves each stimulus
        onto every RF (``Twin.at_rf``). Stimuli must be centred at :attr:`center`; the callable
        carries it as ``respond.center``. Differentiable."""
        sel, scale = self._neuron_tensor(), self._scale()

        def respond(stimuli: torch.Tensor) -> torch.Tensor:
            with eval_mode(self.twin):
                out = self.twin.at_rf(stimuli.to(self.device, torch.float32), self.scan)
            return (out if sel is None else out[:, sel]) * scale

        respond.center = self.center
        return respond

    def border_mask(self, margin: float | None = None, extent: float = 0.0) -> np.ndarray:
        """(N,) bool: True for neurons whose RF is within ``margin + extent`` pixels of the canvas
        edge, where the fast path is not exact.

        margin default: with gray padding (``twin.core.padding == "gray"``) the reach of the
        core's hidden layers (``Twin.hidden_reach``), since the canvas edge matters only where a
        stimulus's support widened by it crosses the edge; with zero padding the whole core's reach
        (``Twin.reach``); either plus the reach of a normalising readout's pool
        (``Twin.pool_reach``). extent: extra pixels: the stimulus's radius for gray padding, the
        spatial extent of a factorized readout's mask for either."""
        if margin is None:
            gray = self.twin.core.padding == "gray"
            margin = (self.twin.hidden_reach if gray else self.twin.reach) + self.twin.pool_reach(
                self.scan
            )
        m = float(margin) + float(extent)
        h, w = self.twin.image_shape
        pos = self.rf_positions
        eps = 1e-4
        inside = (
            (pos[:, 0] >= m - eps)
            & (pos[:, 0] <= w - 1 - m + eps)
            & (pos[:, 1] >= m - eps)
            & (pos[:, 1] <= h - 1 - m + eps)
        )
        return ~inside

    def hybrid_respond(
        self, margin: float | None = None, extent: float = 0.0, chunk_size: int = 2048
    ) -> RespondFn:
        """Fast path for interior neurons, the generic direct path
        (:func:`insilico.search.direct_respond`: Fourier shift of the centred stimulus onto the RF,
        exact for integer shifts, band-limited interpolation otherwise; full model) for the neurons
        flagged by :meth:`border_mask`. Same signature and ``.center`` as :meth:`fast_respond`."""
        fast = self.fast_respond()
        border = np.flatnonzero(self.border_mask(margin, extent))
        if border.size == 0:
            return fast
        sub = self.subset(border)
        direct = search.direct_respond(sub, center=self.center, chunk_size=chunk_size)
        bidx = torch.as_tensor(border)

        def respond(stimuli: torch.Tensor) -> torch.Tensor:
            out = fast(stimuli).clone()
            out[:, bidx.to(out.device)] = direct(stimuli).to(out.device, out.dtype)
            return out

        respond.center = self.center
        return respond


def merge(fast, direct, border):
    """Fast results for interior neurons, direct ones for border neurons.

    fast: (..., N) tensor / array, or an xr.Dataset with a ``neuron`` dim (N);
    direct: the same for all N neurons, or for the border neurons only (..., n_border) /
        a Dataset of n_border neurons (in order of ``np.flatnonzero(border)``);
    border: (N,) bool. Returns the merged object (a copy); Datasets get a ``border`` variable.
    """
    border = np.asarray(border, dtype=bool)
    bidx = np.flatnonzero(border)
    if isinstance(fast, xr.Dataset):
        n = fast.sizes["neuron"]
        if border.shape != (n,):
            raise ValueError(f"border must have shape ({n},); got {border.shape}")
        out = fast.copy(deep=True)
        d = direct if direct.sizes["neuron"] == len(bidx) else direct.isel(neuron=bidx)
        for k in out.data_vars:
            if "neuron" in out[k].dims and k in d:
                vals = out[k].values
                vals[..., bidx] = np.asarray(d[k].values)
                out[k] = (out[k].dims, vals)
        out["border"] = ("neuron", border)
        return out
    is_t = torch.is_tensor(fast)
    out = fast.clone() if is_t else np.array(fast, copy=True)
    n = out.shape[-1]
    if border.shape != (n,):
        raise ValueError(f"border must have shape ({n},); got {border.shape}")
    d = direct if direct.shape[-1] == len(bidx) else direct[..., bidx]
    if is_t:
        out[..., torch.as_tensor(bidx, device=out.device)] = torch.as_tensor(d).to(out)
    else:
        out[..., bidx] = np.asarray(d)
    return out


def size_contrast_tuning(
    model: TwinResponseModel,
    neuron_params: dict,
    sizes: Sequence[float] | None = None,
    contrasts: Sequence[float] = experiments.DEFAULT_CONTRASTS,
    **kw,
) -> xr.DataArray:
    """:func:`insilico.experiments.size_contrast_tuning` of a twin, with the border rule for its
    largest Gabor (extent ``gabor_radius(max(sizes))``; sizes default
    ``experiments.SIZES_DEG`` x pixels per degree): at the default sizes the largest Gabor
    reaches the canvas edge from every RF, so every neuron runs direct (the fast path would clip
    the stimulus at the edge around the canvas centre instead of around the RF)."""
    if sizes is None:
        sizes = tuple(np.asarray(experiments.SIZES_DEG) * pixels_per_degree(model))
    return per_neuron_experiment(
        experiments.size_contrast_tuning,
        model,
        neuron_params,
        sizes,
        contrasts,
        extent=gabor_radius(max(sizes)),
        **kw,
    )


def run_battery(model: TwinResponseModel, gabor_params, **kw):
    """The tuning battery of :func:`insilico.experiments.run_battery` (orientation, phase,
    size-contrast, plaid) as the pipeline runs it on a twin: fast path for interior neurons, direct
    for border neurons and for size tuning. Returns (curves xr.Dataset, indices DataFrame)."""
    params = search.params_of(gabor_params, search.GABOR_KEYS)
    curves = xr.Dataset(
        {
            "orientation_tuning": per_neuron_experiment(
                experiments.orientation_tuning, model, params, 16, **kw
            ),
            "phase_tuning": per_neuron_experiment(
                experiments.phase_tuning, model, params, 16, **kw
            ),
            "size_contrast": size_contrast_tuning(model, params, **kw),
            "plaid": per_neuron_experiment(experiments.plaid_tuning, model, params, **kw),
        }
    )
    return curves, experiments.battery_indices(curves)


def has_fast_path(model) -> bool:
    """Whether the model offers the equivariant fast path (``fast_respond`` and
    ``border_mask``: a TwinResponseModel); other ResponseModels (an imported model,
    ``insilico.external``) run every experiment and search by the direct path."""
    return callable(getattr(model, "fast_respond", None)) and callable(
        getattr(model, "border_mask", None)
    )


def _search(fn, model: TwinResponseModel, grid, margin, extent, refine, border_refine, **kw):
    if not has_fast_path(model):
        ds = fn(model, grid, **kw)
        ds.attrs["path"] = "direct"
        return ds
    border = model.border_mask(margin, extent)
    full = border_refine is None
    counts = np.where(border, 0 if full else max(int(border_refine), int(refine)), int(refine))
    ds = fn(model, grid, respond=model.fast_respond(), center=model.center, refine=counts, **kw)
    if full and border.any():
        ds = merge(ds, fn(model.subset(np.flatnonzero(border)), grid, **kw), border)
    else:
        ds["border"] = ("neuron", border)
    ds.attrs.update(
        path="fast+direct(border)" if full else "fast+rescored(border)",
        refine=int(refine),
        border_refine=-1 if full else int(border_refine),
    )
    return ds


# Candidates per neuron that the fast search hands to the direct path (``search.optimal_gabor``'s
# ``refine``): the fast path's ranking is close to, not the same as, the direct path's.
REFINE = 4
# The same for border neurons, whose fast-path ranking the canvas edge disturbs more (it renders
# every stimulus unclipped at the canvas centre): measured in benchmarks/border.py and
# docs/benchmarks.md ("Border neurons").
BORDER_REFINE = 16


def optimal_gabor(
    model: TwinResponseModel,
    grid=None,
    *,
    margin: float | None = None,
    extent: float = 0.0,
    refine: int = REFINE,
    border_refine: int | None = BORDER_REFINE,
    **kw,
) -> xr.Dataset:
    """:func:`insilico.search.optimal_gabor` by the fast path for every neuron, then each
    neuron's ``refine`` best stimuli (``max(border_refine, refine)`` for the border neurons of
    ``border_mask(margin, extent)``) re-scored by the direct path, the best of them kept.
    ``border_refine=None``: border neurons run the whole grid by the direct path instead (the
    reference; B direct evaluations per border neuron instead of ``border_refine``). Adds a
    ``border`` (neuron,) variable; attrs ``refine``, ``border_refine`` (-1: whole grid)."""
    return _search(search.optimal_gabor, model, grid, margin, extent, refine, border_refine, **kw)


def optimal_dog(
    model: TwinResponseModel,
    grid=None,
    *,
    margin: float | None = None,
    extent: float = 0.0,
    refine: int = REFINE,
    border_refine: int | None = BORDER_REFINE,
    **kw,
) -> xr.Dataset:
    """:func:`insilico.search.optimal_dog` with the same fast path and re-scoring as
    :func:`optimal_gabor`."""
    return _search(search.optimal_dog, model, grid, margin, extent, refine, border_refine, **kw)


class ScanStack:
    """Several scans of one model as one ResponseModel, neurons concatenated in `models` order
    (TwinResponseModels, with the fast path; or models without it, direct path only).

    Clusters span scans; a cluster's stimulus (DT Eq. 6-8) is scored over all its neurons.
    """

    def __init__(self, models: Sequence[TwinResponseModel]):
        if not models:
            raise ValueError("ScanStack needs at least one TwinResponseModel")
        self.models = list(models)

    @property
    def rf_positions(self) -> np.ndarray:
        return np.concatenate([m.rf_positions for m in self.models])

    @property
    def preferred_orientations(self) -> np.ndarray | None:
        prefs = [m.preferred_orientations for m in self.models]
        return None if any(p is None for p in prefs) else np.concatenate(prefs)

    @property
    def response_sd(self) -> np.ndarray | None:
        """(N,) each neuron's :attr:`TwinResponseModel.response_sd`; None unless every scan's
        model has one (an imported model's scale is unknown)."""
        sds = [getattr(m, "response_sd", None) for m in self.models]
        return None if any(s is None for s in sds) else np.concatenate(sds)

    @property
    def has_fast_path(self) -> bool:
        """Whether every scan's model has the fast path (:func:`has_fast_path`)."""
        return all(has_fast_path(m) for m in self.models)

    @property
    def center(self) -> tuple[float, float]:
        return self.models[0].center

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.models[0].image_shape

    @property
    def pixels_per_degree(self) -> float:
        return self.models[0].pixels_per_degree

    @property
    def device(self) -> torch.device:
        return self.models[0].device

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([m(images) for m in self.models], 1)

    def fast_respond(self) -> RespondFn:
        """Each scan's equivariant fast path, concatenated (the core runs once per scan)."""
        parts = [m.fast_respond() for m in self.models]

        def respond(stimuli: torch.Tensor) -> torch.Tensor:
            return torch.cat([p(stimuli) for p in parts], 1)

        respond.center = self.center
        return respond


def per_neuron_experiment(
    fn,
    model: TwinResponseModel,
    neuron_params: dict,
    *args,
    margin: float | None = None,
    extent: float = 0.0,
    **kw,
) -> xr.DataArray:
    """Run ``fn(model, neuron_params, *args, **kw) -> DataArray (neuron, ...)`` (an experiment of
    :mod:`insilico.experiments`) by the fast path for every neuron, then by the direct path for
    the border neurons alone (``border_mask(margin, extent)``), on their own stimuli only, and
    merge. ``extent``: the radius (px) of the experiment's largest stimulus; when it flags every
    neuron the fast path is skipped.

    (:meth:`TwinResponseModel.hybrid_respond` would evaluate every border neuron on every
    neuron's stimuli; here each border neuron sees only its own.)
    """
    if not has_fast_path(model):
        return fn(model, neuron_params, *args, **kw)
    border = np.flatnonzero(model.border_mask(margin, extent))
    if border.size == model.n_neurons:
        return fn(model, neuron_params, *args, **kw)
    out = fn(model, neuron_params, *args, respond=model.fast_respond(), center=model.center, **kw)
    if border.size:
        own = {k: np.asarray(v)[border] for k, v in neuron_params.items()}
        direct = fn(model.subset(border), own, *args, **kw)
        values = out.values.copy()
        values[border] = direct.values
        out = out.copy(data=values)
    return out
