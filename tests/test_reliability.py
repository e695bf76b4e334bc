"""Known answers of the across-seed reliability (ICC(3,1), split-half) and of the correction
for attenuation (insilico.reliability)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from insilico import reliability as rel


def test_identical_seeds_are_perfectly_reliable():
    truth = np.random.default_rng(0).normal(size=200)
    values = np.stack([truth] * 3, axis=1) + np.array([0.0, 5.0, -2.0])  # seed offsets: no cost
    assert rel.icc(values) == pytest.approx(1.0)
    assert rel.split_half(values) == pytest.approx(1.0)


@pytest.mark.parametrize("noise_sd", [0.5, 1.0, 2.0])
def test_independent_noise_gives_the_known_icc(noise_sd):
    """index = truth (var 1) + noise (var s^2) per seed: ICC = 1 / (1 + s^2); the mean over S
    seeds has reliability S ICC / (1 + (S - 1) ICC) (Spearman-Brown)."""
    rng = np.random.default_rng(1)
    n, s = 20000, 4
    values = rng.normal(size=(n, 1)) + noise_sd * rng.normal(size=(n, s))
    expected = 1 / (1 + noise_sd**2)
    assert rel.icc(values) == pytest.approx(expected, abs=0.015)
    assert rel.split_half(values) == pytest.approx(
        s * expected / (1 + (s - 1) * expected), abs=0.02
    )


def test_one_seed_or_pure_noise_is_not_reliable():
    rng = np.random.default_rng(2)
    assert np.isnan(rel.icc(rng.normal(size=(50, 1))))  # unknown, not 1
    assert np.isnan(rel.split_half(rng.normal(size=(50, 1))))
    assert abs(rel.icc(rng.normal(size=(20000, 3)))) < 0.02
    values = rng.normal(size=(100, 2))
    values[3, 1] = np.nan  # a neuron without a value for one seed is left out
    assert np.isfinite(rel.icc(values)) and len(rel.finite_rows(values)) == 99


def test_attenuation_correction_recovers_the_true_correlation():
    """Two indices whose truths correlate r = 0.8, each measured with noise: one seed's r is
    attenuated by sqrt(rel_a rel_b); dividing by it (ICCs from the seeds) recovers 0.8."""
    rng = np.random.default_rng(3)
    n, seeds, r_true = 20000, 3, 0.8
    a = rng.normal(size=n)
    b = r_true * a + np.sqrt(1 - r_true**2) * rng.normal(size=n)
    va = a[:, None] + 1.0 * rng.normal(size=(n, seeds))  # reliability 1/2
    vb = b[:, None] + 0.5 * rng.normal(size=(n, seeds))  # reliability 4/5
    raw = np.corrcoef(va[:, 0], vb[:, 0])[0, 1]
    assert raw == pytest.approx(r_true * np.sqrt(0.5 * 0.8), abs=0.02)
    assert rel.disattenuate(raw, rel.icc(va), rel.icc(vb)) == pytest.approx(r_true, abs=0.03)
    assert rel.disattenuate(0.9, 0.5, 0.5) == 1.0  # clipped
    assert np.isnan(rel.disattenuate(0.3, np.nan, 0.9))  # unknown reliability: unknown
    corr = pd.DataFrame(dict(index_a=["x"], index_b=["y"], spearman_r=[0.2], pearson_r=[-0.4]))
    out = rel.corrected_correlations(corr, {"x": 0.5, "y": 0.8})
    assert out.pearson_r_corrected[0] == pytest.approx(-0.4 / np.sqrt(0.4))
    assert out.reliability_b[0] == 0.8
