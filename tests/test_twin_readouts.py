"""Readouts: positions, bar codes, and the translation-equivariant fast path at_rf."""

import numpy as np
import pytest
import torch

from twin.model import Twin
from twin.readouts import FactorizedReadout, GaussianReadout

F_, O_, H, W = 2, 4, 11, 15  # features, orientations, canvas


def _one_hot_features(readout, channel):
    with torch.no_grad():
        readout.features.zero_()
        readout.features[:, channel] = 1.0
        readout.bias.zero_()


def test_gaussian_readout_reads_its_pixel():
    torch.manual_seed(0)
    readout = GaussianReadout(1, F_, O_, H, W).eval()
    x, y, channel = 5, 3, 6
    with torch.no_grad():
        readout.mu[0] = torch.tensor([2 * x / (W - 1) - 1, 2 * y / (H - 1) - 1])
    _one_hot_features(readout, channel)
    core_out = torch.randn(2, F_ * O_, H, W)
    assert torch.allclose(readout(core_out)[:, 0], core_out[:, channel, y, x], atol=1e-5)
    np.testing.assert_allclose(readout.rf_positions.detach().numpy(), [[x, y]], atol=1e-5)


def test_gaussian_readout_samples_around_mu_in_training_only():
    torch.manual_seed(0)
    readout = GaussianReadout(3, F_, O_, H, W)
    core_out = torch.randn(1, F_ * O_, H, W)
    assert not torch.equal(readout(core_out), readout(core_out))
    readout.eval()
    assert torch.equal(readout(core_out), readout(core_out))


def test_factorized_readout_reads_its_pixel():
    torch.manual_seed(0)
    readout = FactorizedReadout(1, F_, O_, H, W)
    x, y, channel = 9, 2, 3
    with torch.no_grad():
        readout.mask.zero_()
        readout.mask[0, y, x] = 1.0
    _one_hot_features(readout, channel)
    core_out = torch.randn(2, F_ * O_, H, W)
    assert torch.allclose(readout(core_out)[:, 0], core_out[:, channel, y, x], atol=1e-6)
    np.testing.assert_allclose(readout.rf_positions.detach().numpy(), [[x, y]], atol=1e-5)
    assert readout.regularizer() > 0


@pytest.mark.parametrize("cls", [FactorizedReadout, GaussianReadout])
def test_barcodes_are_feature_major(cls):
    readout = cls(5, F_, O_, H, W)
    codes = readout.barcodes
    assert codes.shape == (5, F_, O_)
    assert torch.equal(codes[:, 1, 2], readout.features[:, 1 * O_ + 2])


# at_rf against rendering each stimulus at each neuron's RF -------------------------------

SIZE_H, SIZE_W = 25, 29  # odd, so the canvas centre (14, 12) is a pixel
RFS = np.array([[6, 6], [22, 7], [10, 18], [20, 17], [14, 12]])  # (x, y), >= 6 px from the border


def _model(kind):
    torch.manual_seed(0)
    model = Twin({"features": (3, 2), "orientations": 4, "kernel_sizes": (5, 3)}, {"type": kind},
                 {"s": len(RFS)}, (SIZE_H, SIZE_W)).eval()
    readout = model.readouts["s"]
    with torch.no_grad():
        if kind == "gaussian":
            size = torch.tensor([SIZE_W - 1, SIZE_H - 1], dtype=torch.float32)
            readout.mu.copy_(2 * torch.tensor(RFS, dtype=torch.float32) / size - 1)
        else:  # localized symmetric masks centred on the RFs
            readout.mask.zero_()
            for n, (x, y) in enumerate(RFS):
                readout.mask[n, y - 1:y + 2, x - 1:x + 2] = torch.rand(1) + 0.5
                readout.mask[n, y, x] += 1.0
    return model


def _stimulus_at(patch, x, y):
    """Patch (h, w) on a gray (0) canvas with its centre pixel at (x, y)."""
    canvas = torch.zeros(patch.shape[0], 1, SIZE_H, SIZE_W)
    ph, pw = patch.shape[-2:]
    canvas[:, 0, y - ph // 2:y + ph // 2 + 1, x - pw // 2:x + pw // 2 + 1] = patch
    return canvas


@pytest.mark.parametrize("kind", ["gaussian", "factorized"])
def test_at_rf_equals_stimulus_moved_onto_each_rf(kind):
    model = _model(kind)
    np.testing.assert_allclose(model.rf_positions("s"), RFS, atol=1e-4)
    patch = torch.randn(3, 5, 5)
    cx, cy = (SIZE_W - 1) // 2, (SIZE_H - 1) // 2
    with torch.no_grad():
        fast = model.at_rf(_stimulus_at(patch, cx, cy), "s")  # (B, N)
        direct = torch.stack([model(_stimulus_at(patch, x, y), "s")[:, n] for n, (x, y) in enumerate(RFS)], 1)
    assert fast.shape == direct.shape == (3, len(RFS))
    assert torch.allclose(fast, direct, atol=1e-5)
    # ... and the fast path is not trivially the response to the centred stimulus.
    with torch.no_grad():
        centred = model(_stimulus_at(patch, cx, cy), "s")
    assert (centred - direct).abs().max() > 1e-3
