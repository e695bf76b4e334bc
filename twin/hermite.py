"""2D Hermite functions: the steerable basis of the core's filters and of cluster MEIs.

Coordinates: an image pixel at (row, col) of an S x S patch sits at
``x = col - (S-1)/2`` (rightwards) and ``y = (S-1)/2 - row`` (upwards), in pixels.
A positive angle rotates an image counter-clockwise *as displayed*, the direction of
``torch.rot90(img, k=1, dims=(-2, -1))`` for 90 degrees.

Basis function k = (a, b) is ``h_a(x / sigma) * h_b(y / sigma)`` with ``h_n`` the
orthonormal 1D Hermite function of order n. Functions are ordered by total order
n = a + b (n = 0 .. n_orders-1), and within an order by a = 0 .. n; there are
K = n_orders * (n_orders + 1) / 2 of them. Rotating a function of total order n gives a
combination of functions of the same order only, so rotation is an exact block-diagonal
linear map of the coefficients (`rotation_matrix`).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "n_basis",
    "hermite_functions",
    "hermite_basis",
    "default_sigma",
    "rotation_matrix",
    "rotation_matrices",
    "synthesize",
]


def n_basis(n_orders: int) -> int:
    """Number K of 2D Hermite functions of total order < n_orders."""
    return n_orders * (n_orders + 1) // 2


def _hermite_1d(t: np.ndarray, n_orders: int) -> np.ndarray:
    """Orthonormal Hermite functions h_0..h_{n_orders-1} at t: (n_orders, *t.shape)."""
    out = np.empty((n_orders,) + t.shape)
    out[0] = np.pi**-0.25 * np.exp(-0.5 * t**2)
    if n_orders > 1:
        out[1] = np.sqrt(2.0) * t * out[0]
    for n in range(1, n_orders - 1):
        out[n + 1] = np.sqrt(2.0 / (n + 1)) * t * out[n] - np.sqrt(n / (n + 1)) * out[n - 1]
    return out


def hermite_functions(x: np.ndarray, y: np.ndarray, n_orders: int, sigma: float) -> np.ndarray:
    """The K basis functions evaluated at points (x, y) (pixels): (K, *x.shape), float64."""
    hx = _hermite_1d(np.asarray(x, dtype=np.float64) / sigma, n_orders)
    hy = _hermite_1d(np.asarray(y, dtype=np.float64) / sigma, n_orders)
    return np.stack([hx[a] * hy[n - a] for n in range(n_orders) for a in range(n + 1)])


def default_sigma(size: int, n_orders: int) -> float:
    """Width (pixels) that fits the highest order's support sqrt(2n+1)*sigma into the patch."""
    return (size - 1) / 2 / np.sqrt(2 * (n_orders - 1) + 1) if n_orders > 1 else size / 4


def hermite_basis(size: int, n_orders: int, sigma: float | None = None) -> np.ndarray:
    """Basis sampled on a size x size pixel grid: (K, size, size) float64 (see module doc)."""
    sigma = default_sigma(size, n_orders) if sigma is None else sigma
    c = (size - 1) / 2
    row, col = np.mgrid[0:size, 0:size].astype(np.float64)
    return hermite_functions(col - c, c - row, n_orders, sigma)


def rotation_matrix(angle: float, n_orders: int) -> np.ndarray:
    """(K, K) real matrix M: coefficients c of f give M @ c, those of f rotated by `angle` (rad).

    Rotation is counter-clockwise as displayed (module doc); the matrix does not depend
    on sigma. Each order block is solved exactly (least squares on a point set where the
    block's functions are linearly independent; residual ~1e-13).
    """
    t = np.linspace(-4.0, 4.0, 2 * n_orders + 9)
    x, y = np.meshgrid(t, t)
    cos, sin = np.cos(angle), np.sin(angle)
    # f_rot(p) = f(R(-angle) p)
    xr, yr = cos * x + sin * y, -sin * x + cos * y
    phi = hermite_functions(x.ravel(), y.ravel(), n_orders, 1.0).T  # (P, K)
    phi_rot = hermite_functions(xr.ravel(), yr.ravel(), n_orders, 1.0).T
    m = np.zeros((n_basis(n_orders),) * 2)
    for n in range(n_orders):
        s = slice(n_basis(n), n_basis(n + 1))
        m[s, s] = np.linalg.lstsq(phi[:, s], phi_rot[:, s], rcond=None)[0]
    return m


def rotation_matrices(n_rotations: int, n_orders: int) -> np.ndarray:
    """Rotation matrices for angles 2*pi*o/n_rotations, o = 0..n_rotations-1: (O, K, K)."""
    return np.stack(
        [rotation_matrix(2 * np.pi * o / n_rotations, n_orders) for o in range(n_rotations)]
    )


def synthesize(coefficients, basis):
    """Images from coefficients: (..., K) x (K, S, S) -> (..., S, S); numpy or torch."""
    return (coefficients @ basis.reshape(basis.shape[0], -1)).reshape(
        *coefficients.shape[:-1], *basis.shape[-2:]
    )
