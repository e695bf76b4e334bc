"""In-silico experiments with each neuron's optimal stimuli (DT "In silico experiments").

Every experiment varies one or two parameters of each neuron's optimal Gabor (per neuron or per
cluster: :func:`insilico.search.cluster_optimal_gabor` returns per-neuron parameters too), keeps
the rest fixed, and renders every stimulus at that neuron's own position (the direct path,
:func:`insilico.search.pair_responses`); a ``respond`` callable (the twin's fast path) can be
plugged in instead, see :mod:`insilico.search`. Results are xarray DataArrays with named dims:

* ``orientation_tuning`` -> (neuron, orientation), ``phase_tuning`` -> (neuron, phase)
* ``size_contrast_tuning`` -> (neuron, contrast, size)
* ``plaid_tuning`` -> (neuron, optimal_contrast, orthogonal_contrast)
* ``stimulus_comparison`` -> (neuron, stimulus in {gabor, dog, mei}, energy)

``run_battery`` runs them all and returns (xr.Dataset of curves, pandas DataFrame of indices).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import xarray as xr

from . import indices
from .model import RespondFn, image_shape, model_device, own_responses, pixels_per_degree
from .search import (
    DOG_KEYS,
    GABOR_KEYS,
    _progress,
    pair_responses,
    params_of,
    render_dog,
    render_gabor,
)


def _axis(values, n_default, period):
    if values is None:
        values = n_default
    if np.isscalar(values):
        return np.arange(int(values)) * period / int(values)
    return np.asarray(values, dtype=np.float64).ravel()


def _curve(resp: torch.Tensor, shape, dims, coords, n, attrs=None) -> xr.DataArray:
    """(J, N) responses, J = prod(shape) in C order of dims -> DataArray (neuron, *dims)."""
    a = resp.numpy().astype(np.float64).reshape(*shape, n)
    a = np.moveaxis(a, -1, 0)
    da = xr.DataArray(a, dims=("neuron",) + tuple(dims), coords={"neuron": np.arange(n), **coords})
    da.attrs.update(attrs or {})
    return da


def orientation_tuning(
    model,
    gabor_params,
    orientations=16,
    *,
    relative: bool = False,
    respond: RespondFn | None = None,
    center=None,
    anchors=None,
    chunk_size: int = 2048,
    progress: bool = False,
) -> xr.DataArray:
    """Orientation tuning: each neuron's optimal Gabor at every orientation -> (neuron,
    orientation).

    orientations: an int (that many evenly over [0, pi)) or values in radians. ``relative=True``:
        values are offsets from each neuron's optimal orientation (coordinate = offset).
    gabor_params: per-neuron Gabor parameters (Dataset from ``optimal_gabor`` / DataFrame / dict).
    """
    o = _axis(orientations, 16, math.pi)
    p = params_of(gabor_params, GABOR_KEYS)
    resp = pair_responses(
        model,
        "gabor",
        p,
        {"orientation": o},
        relative=("orientation",) if relative else (),
        respond=respond,
        center=center,
        anchors=anchors,
        chunk_size=chunk_size,
        progress=progress,
    )
    return _curve(
        resp,
        (len(o),),
        ("orientation",),
        {"orientation": o},
        len(p["x"]),
        {"relative": int(relative), "units": "radians"},
    )


def phase_tuning(
    model,
    gabor_params,
    phases=16,
    *,
    relative: bool = False,
    respond: RespondFn | None = None,
    center=None,
    anchors=None,
    chunk_size: int = 2048,
    progress: bool = False,
) -> xr.DataArray:
    """Phase tuning: each neuron's optimal Gabor at every phase -> (neuron, phase).

    phases: an int (evenly over [0, 2 pi)) or values in radians; ``relative`` as for orientation.
    """
    ph = _axis(phases, 16, 2 * math.pi)
    p = params_of(gabor_params, GABOR_KEYS)
    resp = pair_responses(
        model,
        "gabor",
        p,
        {"phase": ph},
        relative=("phase",) if relative else (),
        respond=respond,
        center=center,
        anchors=anchors,
        chunk_size=chunk_size,
        progress=progress,
    )
    return _curve(
        resp,
        (len(ph),),
        ("phase",),
        {"phase": ph},
        len(p["x"]),
        {"relative": int(relative), "units": "radians"},
    )


#: Default sizes (the paper's sigma) of size tuning, degrees: 2 to 32 px of the 36 x 64 canvas at
#: its default 0.305 px / deg (insilico.units), rounded.
SIZES_DEG = (6.5, 13.0, 20.0, 26.0, 40.0, 52.0, 80.0, 105.0)
#: Default L2 norms of the Gabor vs DoG vs MEI comparison, standardized units x degrees (norm in
#: pixels = this x pixels per degree): 4, 8, 16 on the 36 x 64 canvas.
ENERGIES_DEG = (13.0, 26.0, 52.0)
# Top contrast 4 = peak amplitude 2 standard deviations: about the full range of an 8-bit display
# for natural-image statistics (Sensorium and the virtual V1: mean ~113, s.d. ~55 -> at most 2.07
# s.d. below the mean). Higher contrasts are images no screen shows and the twin never saw.
DEFAULT_CONTRASTS = (0.25, 0.5, 1.0, 2.0, 4.0)


def size_contrast_tuning(
    model,
    gabor_params,
    sizes: Sequence[float] | None = None,
    contrasts: Sequence[float] = DEFAULT_CONTRASTS,
    *,
    respond: RespondFn | None = None,
    center=None,
    anchors=None,
    chunk_size: int = 2048,
    progress: bool = False,
) -> xr.DataArray:
    """Size x contrast tuning of each neuron's optimal Gabor -> (neuron, contrast, size).

    sizes: the paper's sigma (pixels, envelope s.d. = size / 2; default ``SIZES_DEG`` x the
    model's pixels per degree); contrasts: a (standardized units). Absolute values shared by all
    neurons, so population averages line up.
    """
    if sizes is None:
        sizes = np.asarray(SIZES_DEG) * pixels_per_degree(model)
    s = np.asarray(sizes, dtype=np.float64)
    c = np.asarray(contrasts, dtype=np.float64)
    cc, ss = np.meshgrid(c, s, indexing="ij")
    p = params_of(gabor_params, GABOR_KEYS)
    resp = pair_responses(
        model,
        "gabor",
        p,
        {"contrast": cc.ravel(), "size": ss.ravel()},
        respond=respond,
        center=center,
        anchors=anchors,
        chunk_size=chunk_size,
        progress=progress,
    )
    return _curve(
        resp, (len(c), len(s)), ("contrast", "size"), {"contrast": c, "size": s}, len(p["x"])
    )


DEFAULT_PLAID_CONTRASTS = (0.0, 0.5, 1.0, 2.0, 4.0)


def plaid_tuning(
    model,
    gabor_params,
    optimal_contrasts: Sequence[float] = DEFAULT_PLAID_CONTRASTS,
    orthogonal_contrasts: Sequence[float] = DEFAULT_PLAID_CONTRASTS,
    *,
    respond: RespondFn | None = None,
    center=None,
    anchors=None,
    chunk_size: int = 2048,
    progress: bool = False,
) -> xr.DataArray:
    """Plaids: optimal Gabor + orthogonal Gabor (same position, size, sf, phase), both contrasts
    varied -> (neuron, optimal_contrast, orthogonal_contrast). Contrasts absolute (a of Eq. 1)."""
    pc = np.asarray(optimal_contrasts, dtype=np.float64)
    oc = np.asarray(orthogonal_contrasts, dtype=np.float64)
    a, b = np.meshgrid(pc, oc, indexing="ij")
    p = params_of(gabor_params, GABOR_KEYS)
    resp = pair_responses(
        model,
        "plaid",
        p,
        {"contrast": a.ravel(), "orthogonal_contrast": b.ravel()},
        respond=respond,
        center=center,
        anchors=anchors,
        chunk_size=chunk_size,
        progress=progress,
    )
    return _curve(
        resp,
        (len(pc), len(oc)),
        ("optimal_contrast", "orthogonal_contrast"),
        {"optimal_contrast": pc, "orthogonal_contrast": oc},
        len(p["x"]),
    )


@torch.no_grad()
def stimulus_comparison(
    model,
    gabor_params,
    dog_params=None,
    meis=None,
    energies: Sequence[float] | None = None,
    *,
    chunk_size: int = 2048,
    progress: bool = False,
) -> xr.DataArray:
    """Optimal Gabor vs DoG vs MEI at matched energy (DT Eq. 15-17) -> (neuron, stimulus, energy).

    Each neuron's stimulus of each kind is rescaled to L2 norm = energy (over the whole canvas,
    standardized units; default ``ENERGIES_DEG`` x the model's pixels per degree) for every
    energy, shown on the canvas as rendered (Gabor / DoG at their own x, y; ``meis``
    (N,1,H,W) as optimised), and only that neuron's response is kept. Kinds that are not given
    (dog_params / meis None) are left out of the ``stimulus`` dim.
    """
    height, width = image_shape(model)
    if energies is None:
        energies = np.asarray(ENERGIES_DEG) * pixels_per_degree(model)
    device = model_device(model)
    gp = params_of(gabor_params, GABOR_KEYS)
    n = len(gp["x"])
    kinds, imgs = (
        ["gabor"],
        [
            render_gabor(
                height=height,
                width=width,
                **{
                    k: torch.as_tensor(v, dtype=torch.float32, device=device) for k, v in gp.items()
                },
            )
        ],
    )
    if dog_params is not None:
        dp = params_of(dog_params, DOG_KEYS)
        kinds.append("dog")
        imgs.append(
            render_dog(
                height=height,
                width=width,
                **{
                    k: torch.as_tensor(v, dtype=torch.float32, device=device) for k, v in dp.items()
                },
            )
        )
    if meis is not None:
        m = torch.as_tensor(meis, dtype=torch.float32).to(device)
        if tuple(m.shape) != (n, 1, height, width):
            raise ValueError(
                f"meis must have shape ({n}, 1, {height}, {width}); got {tuple(m.shape)}"
            )
        kinds.append("mei")
        imgs.append(m)
    stim = torch.stack(imgs, 0)  # (K, N, 1, H, W)
    norm = stim.flatten(2).norm(dim=-1).clamp_min(1e-12)[..., None, None, None]
    unit = stim / norm
    e = torch.as_tensor(np.asarray(energies, dtype=np.float32), device=device)
    kk, ee, nn = [
        t.reshape(-1)
        for t in torch.meshgrid(
            torch.arange(len(kinds), device=device),
            torch.arange(len(e), device=device),
            torch.arange(n, device=device),
            indexing="ij",
        )
    ]
    out = torch.empty(len(nn), dtype=torch.float32)
    starts = range(0, len(nn), chunk_size)
    for s in _progress(starts, len(starts), progress, "matched energy"):
        sl = slice(s, s + chunk_size)
        images = unit[kk[sl], nn[sl]] * e[ee[sl]][:, None, None, None]
        out[sl] = own_responses(model, images, nn[sl]).float().cpu()
    a = out.numpy().astype(np.float64).reshape(len(kinds), len(e), n).transpose(2, 0, 1)
    return xr.DataArray(
        a,
        dims=("neuron", "stimulus", "energy"),
        coords={
            "neuron": np.arange(n),
            "stimulus": kinds,
            "energy": np.asarray(energies, dtype=np.float64),
        },
    )


def battery_indices(
    curves: xr.Dataset, cnn_corr=None, glm_corr=None, plaid_over: str = "orthogonal"
) -> pd.DataFrame:
    """All tuning indices per neuron from the curves of :func:`run_battery` -> DataFrame."""
    n = curves.sizes["neuron"]
    df = pd.DataFrame(index=pd.Index(np.asarray(curves["neuron"].values), name="neuron"))
    if "orientation_tuning" in curves:
        df["orientation_index"] = np.asarray(
            indices.orientation_index(curves["orientation_tuning"])
        )
    if "phase_tuning" in curves:
        df["phase_index"] = np.asarray(indices.phase_index(curves["phase_tuning"]))
        df["phase_f1f0"] = np.asarray(indices.phase_f1f0(curves["phase_tuning"]))
    if "size_contrast" in curves:
        g = curves["size_contrast"]
        df["suppression_index"] = np.asarray(indices.suppression_index(g))
        df["contrast_index"] = np.asarray(indices.contrast_index(g))
    if "plaid" in curves:
        df["plaid_index"] = np.asarray(indices.plaid_index(curves["plaid"], over=plaid_over))
    if "comparison" in curves:
        c = curves["comparison"]
        kinds = list(c["stimulus"].values)
        for a, b in (("gabor", "dog"), ("gabor", "mei"), ("dog", "mei")):
            if a in kinds and b in kinds:
                df[f"{a}_vs_{b}"] = np.asarray(
                    indices.stimulus_ratio(c.sel(stimulus=a), c.sel(stimulus=b))
                )
    if cnn_corr is not None and glm_corr is not None:
        df["nonlinearity_index"] = np.asarray(
            indices.nonlinearity_index(cnn_corr, glm_corr), dtype=np.float64
        ).reshape(n)
    return df


def run_battery(
    model,
    gabor_params,
    dog_params=None,
    meis=None,
    *,
    orientations=16,
    phases=16,
    sizes: Sequence[float] | None = None,
    contrasts: Sequence[float] = DEFAULT_CONTRASTS,
    plaid_contrasts: Sequence[float] = DEFAULT_PLAID_CONTRASTS,
    energies: Sequence[float] | None = None,
    cnn_corr=None,
    glm_corr=None,
    respond: RespondFn | None = None,
    center=None,
    anchors=None,
    chunk_size: int = 2048,
    progress: bool = False,
) -> tuple[xr.Dataset, pd.DataFrame]:
    """All experiments for every neuron -> (curves, indices).

    curves: xr.Dataset with ``orientation_tuning`` (neuron, orientation), ``phase_tuning``
    (neuron, phase),
    ``size_contrast`` (neuron, contrast, size), ``plaid`` (neuron, optimal_contrast,
    orthogonal_contrast) and, when dog_params or meis are given, ``comparison`` (neuron, stimulus,
    energy). indices: DataFrame indexed by neuron with orientation_index (F2/F0), phase_index
    (F1/F0), suppression_index, contrast_index, plaid_index, gabor_vs_dog, gabor_vs_mei,
    dog_vs_mei, nonlinearity_index (those that can be computed).
    """
    kw = dict(
        respond=respond,
        center=center,
        anchors=anchors,
        chunk_size=chunk_size,
        progress=progress,
    )
    curves = {
        "orientation_tuning": orientation_tuning(model, gabor_params, orientations, **kw),
        "phase_tuning": phase_tuning(model, gabor_params, phases, **kw),
        "size_contrast": size_contrast_tuning(model, gabor_params, sizes, contrasts, **kw),
        "plaid": plaid_tuning(model, gabor_params, plaid_contrasts, plaid_contrasts, **kw),
    }
    if dog_params is not None or meis is not None:
        curves["comparison"] = stimulus_comparison(
            model,
            gabor_params,
            dog_params,
            meis,
            energies,
            chunk_size=chunk_size,
            progress=progress,
        )
    ds = xr.Dataset(curves)
    return ds, battery_indices(ds, cnn_corr, glm_corr)
