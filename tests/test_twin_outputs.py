"""Output nonlinearities (twin.outputs): positive, monotonic, continuous, inverses exact; Twin
uses the one it was built with, and build_model starts every neuron at its mean rate."""

import math

import numpy as np
import pytest
import torch

from twin.data import ScanData
from twin.model import Twin
from twin.outputs import EXP_LINEAR_ABOVE, OUTPUTS
from twin.training import build_model


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_outputs_are_positive_increasing_and_inverted(name):
    forward, inverse = OUTPUTS[name]
    x = torch.linspace(-20, 30, 20001, dtype=torch.float64)
    y = forward(x)
    assert (y > 0).all() and (torch.diff(y) > 0).all()
    rates = np.array([1e-2, 0.5, 1.0, 3.0, 100.0, 5000.0])
    np.testing.assert_allclose(forward(torch.tensor(inverse(rates))).numpy(), rates, rtol=1e-9)


def test_exp_output_is_exp_below_the_threshold_and_its_tangent_above():
    forward, _ = OUTPUTS["exp"]
    t = EXP_LINEAR_ABOVE
    x = torch.tensor([-3.0, 0.0, t - 1e-6, t, t + 1e-6, t + 2.0], dtype=torch.float64)
    y = forward(x).numpy()
    np.testing.assert_allclose(y[:4], np.exp(x[:4].numpy()), rtol=1e-12)
    np.testing.assert_allclose(y[4], math.exp(t), rtol=1e-5)  # continuous
    np.testing.assert_allclose(y[5], math.exp(t) * 3.0, rtol=1e-12)  # slope e^t: C1
    assert torch.isfinite(forward(torch.tensor([1e6]))).all()


def test_twin_applies_its_output_and_initial_rates_match_the_data():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (40, 1, 12, 16)).astype(np.float32)
    means = np.array([0.2, 1.0, 4.0])
    responses = rng.poisson(means, (40, 3)).astype(np.float32)
    scan = ScanData("s", images, responses, np.array(["train"] * 40), np.arange(40))
    arch = {
        "core": {"features": (2,), "orientations": 4, "kernel_sizes": (5,)},
        "readout": {"type": "gaussian"},
        "output": "exp",
    }
    model = build_model(arch, [scan]).eval()
    assert model.config["output"] == "exp"
    with torch.no_grad():
        model.readouts["s"].features.zero_()  # drive = bias: the initial rate is the train mean
    rates = model.predict(np.zeros((1, 1, 12, 16)), "s")[0]  # recorded units
    np.testing.assert_allclose(rates, responses.mean(0), rtol=1e-5)
    with pytest.raises(ValueError, match="output"):
        Twin(arch["core"], arch["readout"], {"s": 3}, (12, 16), output="relu")
