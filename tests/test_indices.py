"""Tuning indices (DT Eq. 11-18) and greedy stimulus selection, on curves with known answers."""

import numpy as np
import pytest
import xarray as xr

from insilico import indices


def test_fourier_ratio_pure_sinusoid_is_half_the_modulation():
    # r = 1 + m cos(k s) over a full period: Eq. 11 gives F_k/F_0 = m/2 exactly (not m).
    m = np.array([0.0, 0.3, 0.8, 1.0])
    s = np.arange(12) * 2 * np.pi / 12
    for k in (1, 2, 3):
        r = 1 + m[:, None] * np.cos(k * s[None, :] + 0.7)  # any phase offset
        np.testing.assert_allclose(indices.fourier_ratio(r, s, k), m / 2, atol=1e-12)
        for j in {1, 2, 3, 4} - {k}:
            np.testing.assert_allclose(indices.fourier_ratio(r, s, j), 0, atol=1e-12)


def test_orientation_and_phase_index_dataarray_and_axis():
    o = np.arange(8) * np.pi / 8
    r = 2 + 1.0 * np.cos(2 * (o - 0.4))  # (orientation,)
    da = xr.DataArray(
        np.stack([r, np.full(8, 3.0)]), dims=("neuron", "orientation"), coords={"orientation": o}
    )
    oi = indices.orientation_index(da)
    assert oi.dims == ("neuron",)
    np.testing.assert_allclose(oi.values, [0.25, 0.0], atol=1e-12)
    # numpy with axis: (orientation, neuron)
    np.testing.assert_allclose(
        indices.orientation_index(da.values.T, o, axis=0), [0.25, 0.0], atol=1e-12
    )
    ph = np.arange(16) * 2 * np.pi / 16
    half = np.maximum(np.cos(ph - 1.0), 0)  # half-wave rectified simple cell: pi/4
    np.testing.assert_allclose(indices.phase_index(half[None], ph), [np.pi / 4], atol=1e-2)
    # textbook F1/F0 = first-harmonic amplitude / mean: pi/2 for the half-rectified cell, so
    # "F1/F0 > 1 = simple" holds; m for r = 1 + m cos(s) (DT Eq. 11 literally: m / 2)
    np.testing.assert_allclose(indices.phase_f1f0(half[None], ph), [np.pi / 2], atol=2e-2)
    lin = 1 + 0.8 * np.cos(ph - 0.3)
    np.testing.assert_allclose(indices.phase_f1f0(lin, ph), 0.8, atol=1e-12)


def test_suppression_and_contrast_index():
    sizes = np.array([2.0, 4.0, 8.0, 16.0])
    contrasts = np.array([0.5, 1.0, 2.0])
    mono = contrasts[:, None] * sizes[None, :]  # grows with both: no suppression
    peaked = contrasts[:, None] * np.array([1.0, 3.0, 2.0, 1.5])[None, :]
    sat = np.array([1.0, 3.0, 2.0])[:, None] * sizes[None, :]  # contrast-suppressed
    g = xr.DataArray(
        np.stack([mono, peaked, sat]),
        dims=("neuron", "contrast", "size"),
        coords={"contrast": contrasts, "size": sizes},
    )
    si = indices.suppression_index(g).values
    np.testing.assert_allclose(si, [0.0, (3.0 - 1.5) / 3.0, 0.0], atol=1e-12)
    ci = indices.contrast_index(g).values
    np.testing.assert_allclose(ci, [0.0, 0.0, (3.0 - 2.0) / 3.0], atol=1e-12)
    # coordinates in descending order are sorted first; numpy path with explicit axes
    np.testing.assert_allclose(
        indices.suppression_index(g.isel(size=slice(None, None, -1))).values, si
    )
    np.testing.assert_allclose(
        indices.suppression_index(g.values.transpose(2, 0, 1), axes=(2, 0)), si
    )


def test_plaid_index():
    pc = np.array([0.0, 1.0, 2.0])
    oc = np.array([0.0, 1.0, 2.0])
    # cross-orientation inhibition: r = p / (1 + o)
    cross = pc[:, None] / (1 + oc[None, :])
    flat = pc[:, None] + 0 * oc[None, :]
    g = xr.DataArray(
        np.stack([cross, flat]),
        dims=("neuron", "optimal_contrast", "orthogonal_contrast"),
        coords={"optimal_contrast": pc, "orthogonal_contrast": oc},
    )
    np.testing.assert_allclose(indices.plaid_index(g).values, [(2 - 2 / 3) / 2, 0.0], atol=1e-12)
    # literal Eq. 14 reading: along the optimal contrast at the highest orthogonal one: monotonic ->
    # 0
    np.testing.assert_allclose(
        indices.plaid_index(g, over="optimal").values, [0.0, 0.0], atol=1e-12
    )


def test_stimulus_ratio_and_nonlinearity():
    g = np.array([[1.0, 2.0], [2.0, 2.0]])
    m = np.array([[2.0, 2.0], [1.0, 4.0]])
    np.testing.assert_allclose(indices.stimulus_ratio(g, m), [0.75, 1.25])
    da = xr.DataArray(g, dims=("neuron", "energy"))
    db = xr.DataArray(m, dims=("neuron", "energy"))
    np.testing.assert_allclose(indices.stimulus_ratio(da, db).values, [0.75, 1.25])
    np.testing.assert_allclose(indices.nonlinearity_index([0.6, 0.5], [0.3, 0.5]), [2.0, 1.0])


def test_greedy_stimulus_set():
    optimal = np.array([10.0, 10.0, 10.0, 10.0, 10.0])
    r = np.array(
        [
            [6, 6, 0, 0, 0],  # covers 0, 1
            [6, 6, 6, 0, 0],  # covers 0, 1, 2   <- first pick
            [0, 0, 0, 6, 6],  # covers 3, 4      <- second pick
            [0, 0, 6, 6, 0],  # covers 2, 3 (only 0 new after the first two)
            [4, 4, 4, 4, 4],  # covers nothing at 50 %
        ],
        dtype=float,
    )
    chosen, cov = indices.greedy_stimulus_set(r, optimal, fraction=0.5, n_select=4)
    np.testing.assert_array_equal(chosen, [1, 2])  # stops: nothing new left
    np.testing.assert_allclose(cov, [0.6, 1.0])
    chosen, cov = indices.greedy_stimulus_set(r, optimal, fraction=0.4, n_select=1)
    np.testing.assert_array_equal(chosen, [4])
    np.testing.assert_allclose(cov, [1.0])
    with pytest.raises(ValueError):
        indices.greedy_stimulus_set(r, optimal[:3])
