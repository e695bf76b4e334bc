"""Planted mixtures of bar codes with a known number of clusters, harder than Gaussian blobs: for
validating the rule that chooses k (clustering.mixture.choose_k; benchmarks/choose_k.py, tests).

Families (``FAMILIES``), each k clusters of N bar codes of 4 features x 8 orientations:

- ``spherical``: equal sizes, isotropic Gaussian noise;
- ``aniso``: unequal sizes (Dirichlet(2) proportions, at least 3 %), each cluster's noise a random
  rotation with standard deviations log-uniform over a factor 4;
- ``curved``: as ``aniso``, plus a curved 1-D manifold per cluster (a parabola through its centre,
  as a type's bar code drifts with a continuously drawn sf or size);
- ``heavy``: as ``curved`` with Student-t (3 d.o.f.) noise instead of Gaussian.
"""

from __future__ import annotations

import numpy as np

SHAPE = (4, 8)
FAMILIES = ("spherical", "aniso", "curved", "heavy")
CURVE = 0.75  # the curved manifolds' half-length, in units of the noise radius


def _proportions(k, rng, equal):
    if equal:
        return np.full(k, 1.0 / k)
    p = rng.dirichlet(np.full(k, 2.0))
    p = np.maximum(p, 0.03)
    return p / p.sum()


def _rotation(d, rng):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def planted(family: str, k: int, n: int = 600, seed: int = 0, spread: float = 1.0):
    """(x (n, 4, 8), labels (n,)): k planted clusters of ``family`` (see the module docstring).

    Centres ~ N(0, 4 I) as in the unit test; within-cluster noise s.d. ``spread`` on average per
    dimension; the curved families' manifolds span +-CURVE x the noise radius (spread sqrt(32))
    along a random direction and bend by as much along another."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    rng = np.random.default_rng(1000 * k + seed)
    d = int(np.prod(SHAPE))
    centres = rng.standard_normal((k, d)) * 2
    p = _proportions(k, rng, family == "spherical")
    labels = rng.choice(k, size=n, p=p) if family != "spherical" else np.arange(n) % k
    x = centres[labels].copy()
    for c in range(k):
        m = labels == c
        nc = int(m.sum())
        if family == "spherical":
            x[m] += spread * rng.standard_normal((nc, d))
            continue
        sd = np.exp(rng.uniform(np.log(0.5), np.log(2.0), d))
        sd *= spread / np.sqrt(np.mean(sd**2))
        z = rng.standard_normal((nc, d))
        if family == "heavy":
            z /= np.sqrt(rng.chisquare(3, (nc, 1)) / 3) * np.sqrt(3.0)  # t_3, unit variance
        x[m] += (z * sd) @ _rotation(d, rng).T
        if family in ("curved", "heavy"):
            u, v = _rotation(d, rng)[:2]
            t = rng.uniform(-1, 1, (nc, 1))
            x[m] += CURVE * spread * np.sqrt(d) * (t * u + (t**2 - 1 / 3) * v)
    return x.reshape((n,) + SHAPE), labels
