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
