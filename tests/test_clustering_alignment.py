"""Alignment of bar codes (ICLR Eq. 3-5): pairwise sums, beta selection, the synthetic
experiment."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from clustering import alignment
from clustering.alignment import CyclicAligner, energy_angles, pairwise_mean, select_fit
from clustering.mixture import fit_clusters
from clustering.rotation import rotate

O = 8  # noqa: E741 (orientations: the O of the shapes (N, F, O))
FAST = dict(betas=(0.1, 1.0), max_iter=1000, progress=False)  # two betas keep the tests short


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def gp_readouts(n=16, n_types=2, features=1, noise=0.02, seed=0, length=1.0):
    """ICLR synthetic data set: each type is a sample of a GP with periodic kernel (period 2*pi) at
    O base orientations; each readout is its type rotated (Eq. 2) by a random angle at least 0.1
    steps away from any multiple of 2*pi/O, plus Gaussian noise. Returns (readouts (n, F, O),
    types, angles)."""
    rng = np.random.default_rng(seed)
    theta = 2 * math.pi * np.arange(O) / O
    kernel = np.exp(-2 * np.sin((theta[:, None] - theta[None]) / 2) ** 2 / length**2)
    chol = np.linalg.cholesky(kernel + 1e-6 * np.eye(O))
    prototypes = np.einsum("ij,tfj->tfi", chol, rng.standard_normal((n_types, features, O)))
    types = np.arange(n) % n_types
    steps = rng.integers(0, O, n) + rng.uniform(0.1, 0.9, n)
    angles = steps * 2 * math.pi / O
    readouts = rotate(prototypes[types], angles) + noise * rng.standard_normal((n, features, O))
    return readouts, types, angles


def within_type_distance(x, types):
    """Mean Euclidean distance over pairs of readouts of the same type. x: (N, F, O)."""
    flat = x.reshape(len(x), -1)
    d = np.linalg.norm(flat[:, None] - flat[None], axis=-1)
    same = (types[:, None] == types[None]) & ~np.eye(len(x), dtype=bool)
    return d[same].mean()


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean"])
def test_pairwise_mean_equals_brute_force(metric):
    a = torch.tensor(np.random.default_rng(0).standard_normal((7, 5)))
    d = torch.cdist(a, a) ** (2 if metric == "sqeuclidean" else 1)
    brute = d[np.triu_indices(7, 1)].mean()
    assert float(pairwise_mean(a, metric)) == pytest.approx(float(brute), rel=1e-9)
    if metric == "sqeuclidean":  # the identity behind it, with the full double sum
        n = len(a)
        full = 2 * n * (a * a).sum() - 2 * (a.sum(0) ** 2).sum()
        assert float(full) == pytest.approx(float(d.sum()), rel=1e-9)


def test_all_pairs_gram_form_has_the_gradient_of_the_pairs_themselves():
    """The Gram-matrix mean (the exact training term) against the explicit pairs, in value and
    gradient, float32 input, with two coincident rows and two rows 1e-3 apart (the cancellation
    case): coincident pairs must pass no gradient, as ||d|| smoothed at 0 does not."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((40, 32)).astype(np.float32)
    a[1] = a[0]
    a[3] = a[2] + np.float32(1e-3)
    x = torch.tensor(a, requires_grad=True)
    gram = pairwise_mean(x)
    (g_gram,) = torch.autograd.grad(gram, x)
    x64 = torch.tensor(a, dtype=torch.float64, requires_grad=True)
    explicit = pairwise_mean(x64, pairs=torch.triu_indices(40, 40, 1))
    (g_explicit,) = torch.autograd.grad(explicit, x64)
    assert gram.dtype == torch.float32
    assert float(gram.detach()) == pytest.approx(float(explicit.detach()), rel=1e-6)
    np.testing.assert_allclose(g_gram.numpy(), g_explicit.numpy(), rtol=1e-4, atol=1e-6)


def test_random_pairs_have_no_self_pairs_and_cover_each_neuron():
    pairs = alignment._random_pairs(10, 3, torch.Generator().manual_seed(0), "cpu")
    assert pairs.shape == (2, 30) and torch.all(pairs[0] != pairs[1])
    assert torch.all(torch.bincount(pairs.flatten(), minlength=10) == 6)


def test_select_fit_skips_cold_fits():
    temperatures = np.array([2.0, 6.0, 10.0, 4.9, 5.0])
    eq3 = np.array([0.1, 0.5, 0.3, 0.05, 0.01])  # the two best have T <= 5
    assert select_fit(temperatures, eq3, 5.0) == 2
    with pytest.warns(RuntimeWarning, match="no fit reached"):
        assert select_fit(np.array([1.0, 2.0, 3.0]), np.array([0.3, 0.1, 0.2]), 5.0) == 1


def test_estimator_applies_selection_rule(monkeypatch):
    """The beta whose angles align perfectly (smallest Eq. 3) has T = 2 and must not be chosen."""
    x, _, angles = gp_readouts(n=6, n_types=1, noise=0.0)
    perfect = torch.tensor(np.remainder(-angles, 2 * math.pi), dtype=torch.float32)
    jitter = torch.tensor(np.random.default_rng(0).uniform(-1, 1, 6), dtype=torch.float32)
    fits = {0.1: (perfect, 2.0), 1.0: (perfect + 0.3 * jitter, 8.0), 10.0: (perfect + jitter, 9.0)}
    monkeypatch.setattr(CyclicAligner, "_fit_one", lambda self, x, beta, *a: (*fits[beta], 1))
    al = CyclicAligner(betas=[0.1, 1.0, 10.0], refine_iter=0, progress=False).fit(x)
    assert np.all(np.diff(al.losses_["eq3"]) > 0)  # perfect < small jitter < large jitter
    assert al.beta_ == 1.0 and al.temperature_ == 8.0
    np.testing.assert_allclose(
        al.angles_, np.remainder((perfect + 0.3 * jitter).numpy(), 2 * math.pi), atol=1e-6
    )


def test_energy_angles_are_equivariant_to_cyclic_shifts():
    x = torch.tensor(np.random.default_rng(3).standard_normal((20, 4, O)))
    k = torch.tensor(np.random.default_rng(4).integers(0, O, 20))
    shifted = torch.stack([torch.roll(xi, int(ki), -1) for xi, ki in zip(x, k)])
    diff = (
        torch.remainder(
            energy_angles(shifted) - energy_angles(x) - k.double() * 2 * math.pi / O + 1,
            2 * math.pi,
        )
        - 1
    )
    assert torch.all(diff.abs() < 1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_synthetic_experiment(seed):
    """ICLR Sec. 4: 16 readouts, 2 GP types, 8 orientations, random non-multiple angles.

    Bound: after alignment the within-type mean distance is at most 1.1 x that of the readouts
    rotated back by their true angles (the noise level: noise plus the smoothing of interpolating
    twice), and a spherical 2-component GMM recovers the types exactly."""
    x, types, angles = gp_readouts(seed=seed)
    al = CyclicAligner(**FAST).fit(x)
    aligned = al.transform(x)
    oracle = within_type_distance(rotate(x, -angles), types)
    raw = within_type_distance(x, types)
    assert oracle < raw / 5  # the test is meaningful: misalignment dominates the raw distances
    assert within_type_distance(aligned, types) <= 1.1 * oracle
    assert al.temperature_ > 5
    labels, centres = fit_clusters(aligned, "gmm", 2, random_state=0)
    assert adjusted_rand_score(types, labels) == 1.0 and centres.shape == (2, 1, O)


def test_synthetic_experiment_with_sampled_pairs(monkeypatch):
    """Forcing the stochastic pairwise term (random partners per step) still aligns the types."""
    monkeypatch.setattr(alignment, "_MAX_EXACT_ELEMENTS", 10)
    x, types, _ = gp_readouts(seed=2)
    al = CyclicAligner(pair_sample=4, **{**FAST, "betas": (1.0, 10.0)})
    aligned = al.fit_transform(x)
    assert al.temperature_ > 5
    labels, _ = fit_clusters(aligned, "gmm", 2)
    assert adjusted_rand_score(types, labels) == 1.0
    assert within_type_distance(aligned, types) < within_type_distance(x, types) / 5


def test_cyclic_shifts_of_the_data_change_no_cluster():
    x, types, _ = gp_readouts(n=30, n_types=3, features=2, noise=0.05, seed=5)
    k = np.random.default_rng(6).integers(0, O, len(x))
    shifted = np.stack([np.roll(xi, ki, -1) for xi, ki in zip(x, k)])
    labels = [
        fit_clusters(CyclicAligner(**FAST).fit_transform(d), "gmm", 3)[0] for d in (x, shifted)
    ]
    assert adjusted_rand_score(labels[0], labels[1]) == 1.0
    assert adjusted_rand_score(types, labels[0]) == 1.0


def test_transform_accepts_flat_input_and_checks_n():
    x, _, _ = gp_readouts(n=6, n_types=1, features=2)
    al = CyclicAligner(betas=[1.0], max_iter=20, refine_iter=0, progress=False)
    with pytest.warns(RuntimeWarning, match="no fit reached"):  # 20 steps from T = 1 cannot reach 5
        al.fit(x.reshape(6, -1), orientations=O, order="feature-major")
    assert al.transform(x.reshape(6, -1), O, "feature-major").shape == (6, 2, O)
    assert al.losses_.shape == (1,) and al.angles_.shape == (6,)
    with pytest.raises(ValueError, match="fitted on 6"):
        al.transform(x[:3])
