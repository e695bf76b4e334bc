"""Tuning indices (DT Eq. 11-18) and the greedy selection of sub-optimal stimuli.

Pure numpy, vectorised over neurons. Every index accepts either an xarray DataArray with named
dims (the dim names are given in each docstring and used instead of ``axis``) or a numpy array with
explicit axes. Results are numpy arrays (one value per neuron), or DataArrays over the remaining
dims when a DataArray came in.
"""

from __future__ import annotations

import numpy as np

try:  # xarray is a dependency, but keep the numpy path importable on its own
    import xarray as xr
except ImportError:  # pragma: no cover
    xr = None


def _is_da(a) -> bool:
    return xr is not None and isinstance(a, xr.DataArray)


def _sorted_values(g, dim):
    """DataArray sorted along ``dim`` by its coordinate (if it has one)."""
    if dim not in g.dims:
        raise ValueError(f"DataArray has dims {g.dims}; expected a {dim!r} dim")
    return g.sortby(dim) if dim in g.coords else g


# ---------------------------------------------------------------------------------------------
# DT Eq. 11
# ---------------------------------------------------------------------------------------------
def fourier_ratio(responses, values=None, k: int = 1, axis: int = -1, dim: str | None = None):
    """F_k / F_0 = |sum_j r_j exp(i k s_j)| / sum_j r_j   (DT Eq. 11), along one axis.

    responses: (..., M) tuning curves (non-negative); a DataArray uses ``dim`` and its coordinate
        as ``values`` when these are not given.
    values: (M,) stimulus values s_j in radians (orientation, phase).

    Note the factor: for r(s) = 1 + m cos(k s) sampled uniformly over a full period,
    F_k / F_0 = m / 2 exactly (Eq. 11 divides the Fourier coefficient by the *sum*, not by the
    mean times 1/2), i.e. half the amplitude-to-mean ratio of the best-fitting sinusoid. We
    implement Eq. 11 literally; a cell that is silent over half the cycle (half-wave rectified
    cosine) gives pi/4 ~= 0.785 for k = 1.
    """
    if _is_da(responses):
        if dim is None:
            raise ValueError("fourier_ratio on a DataArray needs dim=")
        if values is None:
            values = responses[dim].values
        r = responses.transpose(..., dim)
        out = fourier_ratio(r.values, values, k=k, axis=-1)
        return xr.DataArray(
            out,
            dims=r.dims[:-1],
            coords={c: r.coords[c] for c in r.coords if dim not in r.coords[c].dims},
        )
    r = np.moveaxis(np.asarray(responses, dtype=np.float64), axis, -1)
    if values is None:
        raise ValueError("fourier_ratio needs values (the stimulus parameter, radians)")
    s = np.asarray(values, dtype=np.float64)
    if s.shape != (r.shape[-1],):
        raise ValueError(f"values must have shape ({r.shape[-1]},); got {s.shape}")
    fk = np.abs(r @ np.exp(1j * k * s))
    f0 = r.sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return fk / f0


def orientation_index(tuning, orientations=None, axis: int = -1, dim: str = "orientation"):
    """F2/F0 over orientation (radians): 0 untuned, larger = sharper orientation tuning.

    Eq. 11 over orientation is already the conventional measure: |sum_j r_j exp(2 i s_j)| /
    sum_j r_j is 1 - circular variance (the global orientation selectivity index), in [0, 1];
    no factor 2 applies (unlike :func:`phase_f1f0`)."""
    if _is_da(tuning):
        return fourier_ratio(tuning, orientations, k=2, dim=dim)
    return fourier_ratio(tuning, orientations, k=2, axis=axis)


def phase_index(tuning, phases=None, axis: int = -1, dim: str = "phase"):
    """F1/F0 over phase (radians) as DT Eq. 11 writes it: |sum_j r_j exp(i s_j)| / sum_j r_j.

    Half the textbook modulation ratio (:func:`phase_f1f0`): ~0 for a complex cell, pi/4 for a
    half-wave rectified simple cell, at most 1."""
    if _is_da(tuning):
        return fourier_ratio(tuning, phases, k=1, dim=dim)
    return fourier_ratio(tuning, phases, k=1, axis=axis)


def phase_f1f0(tuning, phases=None, axis: int = -1, dim: str = "phase"):
    """The textbook F1/F0 over phase: 2 |F1| / F0 = first-harmonic amplitude / mean response
    (Skottun et al. 1991), i.e. 2 x :func:`phase_index`. ~0 complex, pi/2 for a half-wave
    rectified simple cell, at most 2; F1/F0 > 1 is the usual "simple cell" criterion."""
    return 2 * phase_index(tuning, phases, axis=axis, dim=dim)


# ---------------------------------------------------------------------------------------------
# DT Eq. 12-14
# ---------------------------------------------------------------------------------------------
def _two_axis(g, dims, axes):
    """(..., A, B) numpy array with the two named dims / axes last (A = dims[0]); coords sorted."""
    if _is_da(g):
        g = _sorted_values(_sorted_values(g, dims[0]), dims[1])
        g = g.transpose(..., dims[0], dims[1])
        keep = {
            c: g.coords[c]
            for c in g.coords
            if dims[0] not in g.coords[c].dims and dims[1] not in g.coords[c].dims
        }
        return g.values.astype(np.float64), (g.dims[:-2], keep)
    a = np.asarray(g, dtype=np.float64)
    return np.moveaxis(a, list(axes), [-2, -1]), None


def _wrap(out, meta):
    if meta is None:
        return out
    dims, coords = meta
    return xr.DataArray(out, dims=dims, coords=coords)


def _ratio(top, ref):
    with np.errstate(divide="ignore", invalid="ignore"):
        return (top - ref) / top


def suppression_index(g, axes=(-2, -1)):
    """Surround suppression (DT Eq. 12): (g_C - g_{C,S}) / g_C, g_C = max_s g[C, s].

    g: (neuron, contrast, size) tuning, contrasts and sizes ascending (a DataArray is sorted by its
    coordinates). C = highest contrast, S = largest size: the drop from the best size to the
    largest size at the highest contrast. 0 for a response that grows monotonically with size.
    """
    a, meta = _two_axis(g, ("contrast", "size"), axes)
    at_c = a[..., -1, :]  # highest contrast, all sizes
    return _wrap(_ratio(at_c.max(-1), at_c[..., -1]), meta)


def contrast_index(g, axes=(-2, -1)):
    """Contrast suppression (DT Eq. 13): (g_S - g_{C,S}) / g_S, g_S = max_c g[c, S].

    g: (neuron, contrast, size), ascending; the drop from the best contrast to the highest
    contrast at the largest size.
    """
    a, meta = _two_axis(g, ("contrast", "size"), axes)
    at_s = a[..., :, -1]  # largest size, all contrasts
    return _wrap(_ratio(at_s.max(-1), at_s[..., -1]), meta)


def plaid_index(g, axes=(-2, -1), over: str = "orthogonal"):
    """Cross-orientation inhibition (DT Eq. 14): (g_P - g_{P,O}) / g_P.

    g: (neuron, optimal_contrast, orthogonal_contrast), both ascending. P = highest contrast of
    the optimal Gabor, O = highest contrast of the orthogonal one.

    ``over="orthogonal"`` (default): g_P = max_o g[P, o], the drop from the best orthogonal contrast
    (typically 0) to the highest, at the highest optimal contrast -- the analogue of Eq. 12 and the
    effect the paper describes ("suppressing effect of increasing contrast of the orthogonal
    stimulus"). The printed Eq. 14 (g_O = max_p g_{p,C}) has garbled subscripts; its literal
    reading, g_O = max_p g[p, O] (drop along the optimal contrast at the highest orthogonal
    contrast), is ``over="optimal"``.
    """
    a, meta = _two_axis(g, ("optimal_contrast", "orthogonal_contrast"), axes)
    if over == "orthogonal":
        line = a[..., -1, :]
    elif over == "optimal":
        line = a[..., :, -1]
    else:
        raise ValueError(f"over must be 'orthogonal' or 'optimal'; got {over!r}")
    return _wrap(_ratio(line.max(-1), line[..., -1]), meta)


# ---------------------------------------------------------------------------------------------
# DT Eq. 15-18
# ---------------------------------------------------------------------------------------------
def stimulus_ratio(a, b, axis: int = -1, dim: str = "energy"):
    """(1/E) sum_e a_e / b_e (DT Eq. 15-17): a, b (neuron, energy) responses to two stimulus kinds.

    Gabor vs DoG = stimulus_ratio(gabor, dog); Gabor vs MEI = stimulus_ratio(gabor, mei);
    DoG vs MEI = stimulus_ratio(dog, mei).
    """
    if _is_da(a) or _is_da(b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return (a / b).mean(dim)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (a / b).mean(axis)


def nonlinearity_index(cnn_corr, glm_corr):
    """C_CNN / C_GLM (DT Eq. 18): test correlations of the twin and of the GLM baseline, per
    neuron."""
    if _is_da(cnn_corr) or _is_da(glm_corr):
        return cnn_corr / glm_corr
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(cnn_corr, dtype=np.float64) / np.asarray(glm_corr, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Selection of sub-optimal stimuli (DT Methods)
# ---------------------------------------------------------------------------------------------
def greedy_stimulus_set(responses, optimal, fraction: float = 0.5, n_select: int = 20):
    """Greedily choose stimuli that drive most neurons to >= ``fraction`` of their optimum.

    responses: (n_stimuli, N) responses of every neuron to every candidate stimulus (e.g. all
        Gabors of the search grid at the canvas centre, moved onto each RF).
    optimal: (N,) each neuron's optimal (e.g. optimal-Gabor) response.

    Each step picks the stimulus that brings the most not-yet-covered neurons to
    ``responses >= fraction * optimal`` (ties: lowest index). Stops early when no remaining
    stimulus covers a new neuron.

    Returns ``(chosen (K,) int, coverage (K,) float)``, K <= n_select: ``coverage[i]`` = fraction of
    all N neurons covered by the first i + 1 chosen stimuli.
    """
    r = np.asarray(responses, dtype=np.float64)
    opt = np.asarray(optimal, dtype=np.float64)
    if r.ndim != 2 or opt.shape != (r.shape[1],):
        raise ValueError(
            f"responses must be (n_stimuli, N) and optimal (N,); got {r.shape}, {opt.shape}"
        )
    hits = r >= fraction * opt[None, :]
    covered = np.zeros(r.shape[1], dtype=bool)
    available = np.ones(r.shape[0], dtype=bool)
    chosen, coverage = [], []
    for _ in range(min(n_select, r.shape[0])):  # loop over selections, not neurons
        gain = (hits & ~covered[None, :]).sum(1)
        gain[~available] = -1
        best = int(np.argmax(gain))
        if gain[best] <= 0:
            break
        chosen.append(best)
        available[best] = False
        covered |= hits[best]
        coverage.append(covered.mean())
    return np.asarray(chosen, dtype=np.int64), np.asarray(coverage, dtype=np.float64)
