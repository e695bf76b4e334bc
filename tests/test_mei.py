"""MEIs by projected gradient ascent, batched across neurons.

For a rectified linear neuron relu(<w, x>) + eps the maximum over the sphere ||x|| = norm is
x* = norm * w / ||w||, so the MEI must point along its filter.
"""

import numpy as np
import torch

from insilico import mei as mei_mod
from insilico.stimuli import gabor

H, W = 36, 64


class LinearModel:
    image_shape = (H, W)

    def __init__(self):
        x = torch.tensor([16.0, 32.0, 48.0, 40.0])
        y = torch.tensor([10.0, 18.0, 24.0, 12.0])
        self.filters = gabor(
            x,
            y,
            torch.tensor([8.0, 10.0, 6.0, 12.0]),
            torch.tensor([1 / 8, 1 / 6, 1 / 10, 1 / 8]),
            2.0,
            torch.tensor([0.0, 0.7, 1.9, 2.6]),
            torch.tensor([0.0, 1.0, 2.0, 3.0]),
            H,
            W,
        ).flatten(1)
        self.rf_positions = torch.stack([x, y], 1).numpy().astype(float)
        self.preferred_orientations = np.array([0.0, 0.7, 1.9, 2.6])

    def __call__(self, images):
        return torch.relu(images.flatten(1) @ self.filters.T) + 1e-3


def _cos(a, b):
    a, b = a.flatten(1), b.flatten(1)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def test_batched_mei_converges_to_filter_direction():
    model = LinearModel()
    res = mei_mod.mei(model, norm=10.0, steps=60, lr=0.2, seed=1)
    assert res.images.shape == (4, 1, H, W)
    np.testing.assert_allclose(res.images.flatten(1).norm(dim=1).numpy(), 10.0, rtol=1e-5)
    cos = _cos(res.images, model.filters)
    assert torch.all(cos > 0.95), cos
    # responses are those of each neuron to its own image, near the analytic optimum norm * ||w||
    best = 10.0 * model.filters.norm(dim=1) + 1e-3
    assert torch.all(res.responses > 0.95 * best)
    assert res.history[-1] > res.history[0]


def test_batched_matches_one_at_a_time():
    model = LinearModel()
    init = torch.randn(4, 1, H, W, generator=torch.Generator().manual_seed(3))
    init = 0.2 * init + model.filters.reshape(4, 1, H, W)  # every neuron starts active
    kw = dict(norm=8.0, steps=40, lr=0.2, smooth_sigma=1.0, jitter=1, seed=5)
    batched = mei_mod.mei(model, init=init, neurons=np.arange(4), **kw)
    for n in (0, 2):
        single = mei_mod.mei(model, init=init[n : n + 1], neurons=[n], **kw)
        torch.testing.assert_close(single.images[0], batched.images[n], atol=1e-4, rtol=1e-4)

    # respond_own path (e.g. the twin evaluating only each neuron's own readout)
    def own(x):
        return torch.relu((x.flatten(1) * model.filters).sum(1)) + 1e-3

    via_own = mei_mod.mei(respond_own=own, init=init, **kw)
    torch.testing.assert_close(via_own.images, batched.images, atol=1e-4, rtol=1e-4)


def test_ball_constraint_and_smoothing():
    model = LinearModel()
    res = mei_mod.mei(
        model,
        neurons=[1, 3],
        norm=5.0,
        constraint="ball",
        steps=40,
        lr=0.2,
        smooth_sigma=0.5,
        seed=2,
    )
    norms = res.images.flatten(1).norm(dim=1)
    assert torch.all(norms <= 5.0 + 1e-4)
    assert torch.all(_cos(res.images, model.filters[[1, 3]]) > 0.9)
    np.testing.assert_array_equal(res.neurons, [1, 3])
