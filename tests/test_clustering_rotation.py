"""Cyclic rotation (ICLR Eq. 2) and its von Mises relaxation (ICLR Eq. 4)."""

import math

import numpy as np
import pytest
import torch

from clustering.rotation import (
    as_barcodes,
    relaxed_rotate,
    relaxed_rotation_matrix,
    rotate,
    rotation_matrix,
)

O = 8  # noqa: E741 (orientations: the O of the shapes (N, F, O))
STEP = 2 * math.pi / O


@pytest.fixture
def barcodes():
    return np.random.default_rng(0).standard_normal((5, 3, O))


@pytest.mark.parametrize("k", [0, 1, 3, 7, -2, 9])
def test_exact_shift_at_multiples(barcodes, k):
    np.testing.assert_allclose(
        rotate(barcodes, np.full(5, k * STEP)), np.roll(barcodes, -k, axis=-1), atol=1e-12
    )
    s = rotation_matrix(k * STEP, O)
    np.testing.assert_allclose(s, np.roll(np.eye(O), k, axis=1), atol=1e-12)  # row j picks j + k


def test_halfway_interpolates_neighbours(barcodes):
    expected = 0.5 * (barcodes + np.roll(barcodes, -1, axis=-1))
    np.testing.assert_allclose(rotate(barcodes, 0.5 * STEP), expected, atol=1e-12)
    quarter = rotate(barcodes, 2.25 * STEP)
    np.testing.assert_allclose(
        quarter, 0.75 * np.roll(barcodes, -2, -1) + 0.25 * np.roll(barcodes, -3, -1), atol=1e-12
    )


def test_rotate_then_unrotate_is_identity_for_multiples(barcodes):
    alpha = np.random.default_rng(1).integers(0, O, 5) * STEP
    np.testing.assert_allclose(rotate(rotate(barcodes, alpha), -alpha), barcodes, atol=1e-12)
    # not the identity in between (interpolating twice smooths)
    off = alpha + 0.4 * STEP
    assert np.abs(rotate(rotate(barcodes, off), -off) - barcodes).max() > 0.05


def test_relaxed_tends_to_exact_as_temperature_grows(barcodes):
    alpha = np.array([0, 1, 2, 5, 6]) * STEP
    exact = rotate(barcodes, alpha)
    errors = [np.abs(relaxed_rotate(barcodes, alpha, t) - exact).max() for t in (1, 5, 20, 100)]
    assert all(a > b for a, b in zip(errors, errors[1:]))
    assert errors[0] > 0.1 and errors[-1] < 1e-6
    m = relaxed_rotation_matrix(0.3, 2.0, O)
    np.testing.assert_allclose(m.sum(1), 1.0)  # convex combination of shifts
    np.testing.assert_allclose(relaxed_rotation_matrix(0.0, 0.0, O), np.full((O, O), 1 / O))


def test_torch_matches_numpy_and_has_gradients(barcodes):
    alpha = np.random.default_rng(2).uniform(0, 2 * math.pi, 5)
    a = torch.tensor(alpha, requires_grad=True)
    t = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    out = relaxed_rotate(torch.tensor(barcodes), a, t)
    np.testing.assert_allclose(
        out.detach().numpy(), relaxed_rotate(barcodes, alpha, 3.0), atol=1e-12
    )
    out.square().sum().backward()
    assert torch.all(a.grad != 0) and t.grad != 0
    np.testing.assert_allclose(
        rotate(torch.tensor(barcodes), torch.tensor(alpha)).numpy(),
        rotate(barcodes, alpha),
        atol=1e-12,
    )


def test_as_barcodes_takes_the_channel_order_and_refuses_to_guess():
    flat = np.arange(2 * 3 * O).reshape(2, 3 * O)
    x = as_barcodes(flat, orientations=O, order="feature-major")
    assert x.shape == (2, 3, O) and x[1, 2, 5] == flat[1, 2 * O + 5]
    r = as_barcodes(torch.tensor(flat), orientations=O, order="rotation-major")
    assert r.shape == (2, 3, O) and r[1, 2, 5] == flat[1, 5 * 3 + 2]  # k = o*F + f
    np.testing.assert_array_equal(as_barcodes(np.swapaxes(x, 1, 2), order="rotation-major"), x)
    for kw in ({}, {"orientations": O}, {"order": "feature-major"}):
        with pytest.raises(ValueError, match="order="):
            as_barcodes(flat, **kw)
    with pytest.raises(ValueError, match="order must be one of"):
        as_barcodes(flat, orientations=O, order="rotation")
