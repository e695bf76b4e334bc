"""Reliability of an index across twins trained with different seeds, and correlations
corrected for it (attenuation).

An in-silico index measured on one twin carries the twin's own noise (its initialisation and
batch order): noise pulls correlations between indices towards 0, so independence between
indices (DT Fig. 4C) can appear from noise alone. With the same index measured on S twins
(seeds) for N neurons, ``values`` (N, S):

- :func:`icc`: ICC(3,1), two-way mixed, consistency, single measurement (Shrout & Fleiss 1979)::

      ICC(3,1) = (MS_rows - MS_error) / (MS_rows + (S - 1) MS_error)

  with MS_rows = S sum_n (mean_n - mean)^2 / (N - 1) (between neurons) and MS_error = the
  residual mean square of the two-way (neuron + seed) decomposition, over (N - 1)(S - 1) degrees
  of freedom. Consistency, not absolute agreement: an offset shared by all neurons of one seed
  does not lower it, as it changes no correlation. For index = truth + independent noise of
  variance s_e^2 per seed, ICC(3,1) -> var(truth) / (var(truth) + s_e^2): the reliability of
  one seed's index, which is what one seed's correlations are attenuated by.
- :func:`split_half`: the Pearson correlation r_h between the means over the even- and the
  odd-numbered seeds, stepped up by Spearman-Brown: 2 r_h / (1 + r_h): the reliability of the
  mean over all S seeds (exact for even S; for odd S the halves differ by one seed).
- :func:`disattenuate`: r_corrected = r_raw / sqrt(rel_a rel_b) (Spearman 1904), clipped to
  [-1, 1]; NaN where a reliability is unknown (one seed) or not positive.

Neurons with a non-finite value for any seed are left out. With fewer than 2 seeds or 3
neurons a reliability is unknown: NaN (never 1).
"""

from __future__ import annotations

import numpy as np

__all__ = ["icc", "split_half", "disattenuate", "corrected_correlations", "finite_rows"]


def finite_rows(values) -> np.ndarray:
    """The rows (neurons) of ``values`` (N, S) that are finite for every seed, as float."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 2:
        raise ValueError(f"values must be (neurons, seeds), got shape {v.shape}")
    return v[np.isfinite(v).all(axis=1)]


def icc(values) -> float:
    """ICC(3,1) (consistency, single seed) of ``values`` (N neurons, S seeds); NaN if S < 2,
    N < 3 or no variance at all."""
    v = finite_rows(values)
    n, s = v.shape
    if s < 2 or n < 3:
        return float("nan")
    grand = v.mean()
    rows = v.mean(axis=1, keepdims=True)
    cols = v.mean(axis=0, keepdims=True)
    ms_rows = s * np.sum((rows - grand) ** 2) / (n - 1)
    ms_error = np.sum((v - rows - cols + grand) ** 2) / ((n - 1) * (s - 1))
    denominator = ms_rows + (s - 1) * ms_error
    return float((ms_rows - ms_error) / denominator) if denominator > 0 else float("nan")


def split_half(values) -> float:
    """Spearman-Brown stepped-up correlation between the means over even and odd seeds of
    ``values`` (N neurons, S seeds); NaN if S < 2, N < 3 or a half has no variance."""
    v = finite_rows(values)
    n, s = v.shape
    if s < 2 or n < 3:
        return float("nan")
    a, b = v[:, 0::2].mean(axis=1), v[:, 1::2].mean(axis=1)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    r = float(np.corrcoef(a, b)[0, 1])
    return 2 * r / (1 + r) if r > -1 else float("nan")


def disattenuate(r, rel_a, rel_b):
    """r / sqrt(rel_a rel_b), clipped to [-1, 1]; NaN where r or a reliability is NaN or a
    reliability is <= 0. Broadcasts over arrays."""
    r, rel_a, rel_b = (np.asarray(x, dtype=float) for x in (r, rel_a, rel_b))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(
            (rel_a > 0) & (rel_b > 0), np.clip(r / np.sqrt(rel_a * rel_b), -1, 1), np.nan
        )
    return out if out.ndim else float(out)


def corrected_correlations(correlations, reliability: dict):
    """``correlations`` (a DataFrame with ``index_a, index_b`` and ``spearman_r`` and/or
    ``pearson_r`` columns, e.g. :func:`insilico.population.index_correlations`) with
    ``reliability_a, reliability_b`` (from ``reliability``: index -> ICC, NaN if unknown) and
    each ``*_r`` column corrected for attenuation (:func:`disattenuate`) as ``*_r_corrected``."""
    out = correlations.copy()
    out["reliability_a"] = [float(reliability.get(i, np.nan)) for i in out["index_a"]]
    out["reliability_b"] = [float(reliability.get(i, np.nan)) for i in out["index_b"]]
    for column in ("spearman_r", "pearson_r"):
        if column in out:
            out[column + "_corrected"] = disattenuate(
                out[column].to_numpy(float), out["reliability_a"], out["reliability_b"]
            )
    return out
