"""Poisson GLM baseline: recovers a known linear-exponential neuron."""

import numpy as np
import pytest

from twin.data import ScanData
from twin.glm import PoissonGLM
from twin.metrics import correlation

H, W, DOWN = 16, 24, 4  # pooled to 4 x 6 = 24 pixels


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def glm_scan():
    """Neurons with rate = exp(w . pooled standardized image + b); the truth is known."""
    rng = np.random.default_rng(0)
    n, t = 6, 1400
    pooled = rng.normal(size=(t, H // DOWN, W // DOWN))
    images = 128 + 30 * np.kron(pooled, np.ones((DOWN, DOWN)))[:, None]  # piecewise constant
    true_w = rng.normal(size=(n, H // DOWN, W // DOWN)) * 0.15
    x = (images - images[:1000].mean()) / images[:1000].std()
    x = x.reshape(t, 1, H // DOWN, DOWN, W // DOWN, DOWN).mean((1, 3, 5)).reshape(t, -1)
    rates = np.exp(x @ true_w.reshape(n, -1).T + 0.3)
    tiers = np.array(["train"] * 1000 + ["validation"] * 200 + ["test"] * 200)
    scan = ScanData(
        "g", images.astype(np.float32), rng.poisson(rates).astype(np.float32), tiers, np.arange(t)
    )
    return scan, true_w, rates


def test_glm_recovers_filters_and_predicts_like_the_truth(glm_scan):
    scan, true_w, rates = glm_scan
    glm = PoissonGLM(alphas=np.geomspace(0.1, 5, 4), downsample=DOWN).fit(scan)
    assert glm.coef_.shape == true_w.shape and glm.intercept_.shape == (6,)
    assert set(glm.alpha_) <= set(glm.alphas) and glm.validation_nll_.shape == (4, 6)
    filter_corr = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(glm.coef_, true_w)]
    assert min(filter_corr) > 0.9
    np.testing.assert_allclose(glm.intercept_, 0.3, atol=0.15)
    test = scan.select("test")
    achieved = correlation(glm.predict(test.images), test.responses)
    ceiling = correlation(rates[scan.mask("test")], test.responses)  # the true model's correlation
    assert (achieved > ceiling - 0.05).all() and (achieved > 0.3).all()


def test_stronger_penalty_shrinks_weights(glm_scan):
    scan, _, _ = glm_scan
    weak = PoissonGLM(alphas=[0.1], downsample=DOWN, max_iter=50).fit(scan)
    strong = PoissonGLM(alphas=[1e4], downsample=DOWN, max_iter=50).fit(scan)
    assert (np.abs(strong.coef_).sum((1, 2)) < 0.5 * np.abs(weak.coef_).sum((1, 2))).all()


def test_fitting_neurons_jointly_equals_fitting_them_in_chunks(glm_scan):
    scan, _, _ = glm_scan
    joint = PoissonGLM(alphas=[0.5], downsample=DOWN).fit(scan)
    chunked = PoissonGLM(alphas=[0.5], downsample=DOWN, max_elements=2 * len(scan.responses)).fit(
        scan
    )
    np.testing.assert_allclose(chunked.coef_, joint.coef_, atol=2e-3)
    np.testing.assert_allclose(chunked.intercept_, joint.intercept_, atol=2e-3)


def test_linear_high_sf_neurons_are_linear_at_the_twins_resolution():
    """DT Eq. 18: linear neurons get a non-linearity index (C_twin / C_GLM) near 1 when the GLM
    sees the twin's input resolution; pooled 4x it cannot see a 4-px period and calls them
    non-linear. The ideal twin (the true rates) stands in for the CNN."""
    from insilico.indices import nonlinearity_index
    from insilico.stimuli import gabor

    rng = np.random.default_rng(1)
    n, t = 5, 3800
    filters = (
        gabor(
            x=np.linspace(8, 15, n),
            y=8.0,
            size=6.0,
            sf=0.25,
            contrast=1.0,
            orientation=np.linspace(0, 2.5, n),
            phase=0.0,
            height=H,
            width=W,
        )[:, 0]
        .numpy()
        .astype(np.float64)
    )
    filters /= np.linalg.norm(filters.reshape(n, -1), axis=1)[:, None, None]
    x = rng.normal(size=(t, H, W))
    rates = np.exp(0.8 * np.einsum("thw,nhw->tn", x, filters) + 0.5)
    tiers = np.array(["train"] * 3000 + ["validation"] * 400 + ["test"] * 400)
    scan = ScanData(
        "hf",
        (128 + 30 * x[:, None]).astype(np.float32),
        rng.poisson(rates).astype(np.float32),
        tiers,
        np.arange(t),
    )
    test = scan.select("test")
    twin = correlation(rates[scan.mask("test")], test.responses)
    glm = PoissonGLM(downsample=1).fit(scan)
    assert len(glm.alphas) == 48 and glm.alphas.min() == pytest.approx(0.1)
    ni = nonlinearity_index(twin, correlation(glm.predict(test.images), test.responses))
    assert np.all(np.abs(ni - 1) < 0.1), (ni, glm.alpha_)
    pooled = PoissonGLM(downsample=4).fit(scan)
    ni4 = nonlinearity_index(twin, correlation(pooled.predict(test.images), test.responses))
    assert np.all(np.abs(ni4) > 2), ni4
