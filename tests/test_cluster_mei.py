"""Cluster MEIs in the steerable Hermite basis (insilico.cluster_mei, DT Eq. 4-8).

Ground truth: linear Gabor neurons relu(<w_i, x>) of two types (even and odd phase), each at its
own RF and orientation. A type's cluster MEI, in the canonical orientation 0, must be that type's
Gabor at orientation 0 (up to the pi-rotation ambiguity of an odd Gabor, which the max over the
offsets (0, pi) absorbs).
"""

import math

import numpy as np
import pytest
import torch

from insilico import cluster_mei as cm
from insilico.stimuli import gabor
from twin import hermite

H, W = 36, 64
CENTER = ((W - 1) / 2, (H - 1) / 2)
SIZE, SF = 8.0, 1 / 8


class LinearGabors:
    """relu(<w_i, x>) + eps; w_i the Gabor of neuron i at its RF. ``respond``: the fast path."""

    image_shape = (H, W)
    pixels_per_degree = 0.3

    def __init__(self, x, y, orientation, phase):
        def t(v):
            return torch.as_tensor(np.asarray(v, dtype=np.float32))

        self.filters = gabor(t(x), t(y), SIZE, SF, 2.0, t(orientation), t(phase), H, W).flatten(1)
        self.centred = gabor(
            CENTER[0], CENTER[1], SIZE, SF, 2.0, t(orientation), t(phase), H, W
        ).flatten(1)
        self.rf_positions = np.stack([x, y], 1).astype(float)
        self.preferred_orientations = np.asarray(orientation, dtype=float)

    def __call__(self, images):
        return torch.relu(images.flatten(1) @ self.filters.T) + 1e-3

    def respond(self, stimuli_centred):
        return torch.relu(stimuli_centred.flatten(1) @ self.centred.T) + 1e-3


def _corr(a, b):
    a = np.asarray(torch.as_tensor(a).detach(), dtype=np.float64).ravel()
    b = np.asarray(torch.as_tensor(b).detach(), dtype=np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def population():
    rng = np.random.default_rng(0)
    n = 12
    x = rng.integers(16, 48, n).astype(float)
    y = rng.integers(12, 24, n).astype(float)
    ori = rng.uniform(0, math.pi, n)
    labels = np.array([0, 1] * (n // 2))
    phase = np.where(labels == 0, 0.0, math.pi / 2)
    return LinearGabors(x, y, ori, phase), labels, phase


def test_rotation_matrices_are_exact():
    angles = np.array([0.0, 0.3, math.pi / 2, 2.0, -1.1, 7.0])
    got = cm.rotation_matrices_at(angles, 6).numpy()
    for a, m in zip(angles, got):
        np.testing.assert_allclose(m, hermite.rotation_matrix(a, 6), atol=1e-5)


def test_coefficient_rotation_equals_image_rotation_90():
    rng = np.random.default_rng(1)
    n_orders = 7
    beta = torch.as_tensor(rng.normal(size=(3, hermite.n_basis(n_orders))), dtype=torch.float32)
    # twin.hermite's own patch basis: counter-clockwise
    basis = torch.as_tensor(hermite.hermite_basis(21, n_orders), dtype=torch.float32)
    rot = cm.rotation_matrices_at([math.pi / 2], n_orders)[0]
    np.testing.assert_allclose(
        cm.synthesize(beta @ rot.T, basis),
        torch.rot90(cm.synthesize(beta, basis), 1, dims=(-2, -1)),
        atol=1e-5,
    )
    # insilico orientation convention (clockwise as displayed), on a square canvas
    cb = cm.canvas_basis([(16.0, 16.0)], n_orders, 2.5, height=33, width=33)[0]
    img = cm.synthesize(beta, cb)
    turned = cm.synthesize(cm.rotate_coefficients(beta, math.pi / 2, n_orders), cb)
    np.testing.assert_allclose(turned, torch.rot90(img, -1, dims=(-2, -1)), atol=1e-5)


def test_rotated_coefficients_follow_gabor_orientation():
    """A Gabor fitted at orientation 0 and turned by theta is the Gabor at orientation theta."""
    n_orders = 9
    basis = cm.canvas_basis([CENTER], n_orders, cm.default_sigma(n_orders, 12.0), H, W)[0]
    g0 = gabor(CENTER[0], CENTER[1], SIZE, SF, 2.0, 0.0, 0.0, H, W)[0, 0]
    beta = torch.linalg.lstsq(basis.flatten(1).T, g0.flatten()[:, None]).solution[:, 0]
    assert _corr(cm.synthesize(beta, basis), g0) > 0.97
    for theta in (math.pi / 3, 1.0):
        turned = cm.synthesize(cm.rotate_coefficients(beta, theta, n_orders), basis)
        assert _corr(turned, gabor(CENTER[0], CENTER[1], SIZE, SF, 2.0, theta, 0.0, H, W)) > 0.97


@pytest.mark.parametrize("path", ["fast", "direct"])
def test_cluster_mei_recovers_each_type(population, path):
    model, labels, phase = population
    kw = dict(respond=model.respond, center=CENTER) if path == "fast" else dict(center=CENTER)
    res = cm.cluster_mei(model, labels, norm=10.0, steps=60, lr=0.2, seed=0, **kw)
    assert res.images.shape == (2, 1, H, W)
    np.testing.assert_array_equal(res.labels, [0, 1])
    for k, tau in ((0, 0.0), (1, math.pi / 2)):
        # canonical = the type's Gabor at orientation 0; rotation by pi (the other offset) is
        # allowed
        corr = max(
            _corr(res.images[k], gabor(CENTER[0], CENTER[1], SIZE, SF, 2.0, o, tau, H, W))
            for o in (0.0, math.pi)
        )
        assert corr > 0.9, (path, k, corr)
    np.testing.assert_allclose(res.images.flatten(1).norm(dim=1), 10.0, rtol=1e-3)
    assert res.history[-1] >= res.history[0]
    assert (res.neuron_responses > 1.0).all()
    # each neuron's own stimulus (exact angle, at its RF) drives it as the optimisation says
    stim = res.neuron_stimuli()
    own = model(stim).diagonal().numpy()
    tol = 0.25 if path == "fast" else 1e-3  # fast path: 15-degree angle grid
    np.testing.assert_allclose(own, res.neuron_responses, rtol=tol)


def test_cluster_mei_runs_on_the_twin_fast_path():
    """Integration: a (random) Twin through TwinResponseModel.fast_respond, two clusters,
    batched."""
    from insilico.twin_adapter import TwinResponseModel
    from twin.data import ScanData
    from twin.training import build_model

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    t, n = 20, 6
    scan = ScanData(
        "s",
        rng.uniform(0, 255, (t, 1, H, W)),
        rng.poisson(2.0, (t, n)),
        np.array(["train"] * 15 + ["validation"] * 5),
        np.arange(t),
    )
    m = TwinResponseModel(
        build_model("cpu", [scan], seed=0), "s", preferred_orientations=rng.uniform(0, math.pi, n)
    )
    res = cm.cluster_mei(
        m,
        np.array([0, 0, 0, 1, 1, 1]),
        respond=m.fast_respond(),
        n_orders=5,
        steps=3,
        n_angles=8,
        norm=5.0,
    )
    assert res.center == m.center
    assert res.images.shape == (2, 1, H, W) and np.isfinite(res.neuron_responses).all()
    assert res.history[-1] >= res.history[0] - 1e-3


def test_weights_standardise_the_objective(population):
    # one cluster of both types, the odd-phase neurons' responses 40x larger: weighting each
    # neuron by 1 / its scale leaves the objective, hence the whole ascent, as without the
    # scales; unweighted, the loud neurons steer the cluster's MEI
    model, labels, phase = population
    scale = np.where(labels == 1, 40.0, 1.0)
    x, y = model.rf_positions.T
    loud = LinearGabors(x, y, model.preferred_orientations, phase)
    loud.filters = loud.filters * torch.as_tensor(scale, dtype=torch.float32)[:, None]
    one = np.zeros_like(labels)
    kw = dict(norm=10.0, steps=20, lr=0.2, seed=0, n_angles=None)
    ref = cm.cluster_mei(model, one, **kw).coefficients
    same = cm.cluster_mei(loud, one, weights=1 / scale, **kw).coefficients
    plain = cm.cluster_mei(loud, one, **kw).coefficients
    np.testing.assert_allclose(same, ref, rtol=1e-3, atol=1e-3)
    assert _corr(plain, ref) < 0.9
