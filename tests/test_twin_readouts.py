"""Readouts: positions, bar codes, and the translation-equivariant fast path at_rf."""

import numpy as np
import pytest
import torch

from twin.model import Twin
from twin.readouts import READOUTS, FactorizedReadout, GaussianReadout, NormalizedGaussianReadout

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


def test_normalized_readout_divides_by_its_pooled_energy():
    """Uniform features v: E = sum_f a_f O (v - b_f)^2 everywhere, the annulus (normalised over the
    plane) sums to 1 on a canvas it fits in, so drive = gaussian drive - log(1 + k sqrt(E))."""
    torch.manual_seed(0)
    h = w = 61
    dn = NormalizedGaussianReadout(2, F_, O_, h, w, init_inner=2.0, init_outer=4.0).eval()
    with torch.no_grad():
        dn.mu.zero_()
        dn.kappa.copy_(torch.tensor([0.3, 1.5]))
        dn.energy_offset.copy_(torch.tensor([0.5, -1.0]))
    v = torch.tensor([1.0, 2.0])
    core_out = v.repeat_interleave(O_).view(1, F_ * O_, 1, 1).expand(1, -1, h, w)
    with torch.no_grad():
        plain = GaussianReadout.forward(dn, core_out)
        energy = (
            torch.nn.functional.softplus(dn.energy_weight) * O_ * (v - dn.energy_offset) ** 2
        ).sum()
        expected = plain - torch.log1p(torch.nn.functional.softplus(dn.kappa) * energy.sqrt())
        np.testing.assert_allclose(dn(core_out), expected, rtol=1e-4)
        assert (plain - dn(core_out)).min() > 0.1  # the divisor is not negligible here
        assert dn.pool_reach == pytest.approx(4.3 * 4.0)


@pytest.mark.parametrize("kind", sorted(READOUTS))
def test_own_is_each_images_own_neuron(kind):
    """own(core_out, idx)[m] == forward(core_out)[m, idx[m]] (eval)."""
    torch.manual_seed(1)
    readout = READOUTS[kind](4, F_, O_, H, W).eval()
    core_out = torch.randn(5, F_ * O_, H, W)
    idx = torch.tensor([0, 3, 3, 1, 2])
    with torch.no_grad():
        np.testing.assert_allclose(
            readout.own(core_out, idx),
            readout(core_out).gather(1, idx[:, None])[:, 0],
            rtol=1e-5,
            atol=1e-6,
        )


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
    model = Twin(
        {"features": (3, 2), "orientations": 4, "kernel_sizes": (5, 3)},
        {"type": kind},
        {"s": len(RFS)},
        (SIZE_H, SIZE_W),
    ).eval()
    readout = model.readouts["s"]
    with torch.no_grad():
        if kind == "factorized":  # localized symmetric masks centred on the RFs
            readout.mask.zero_()
            for n, (x, y) in enumerate(RFS):
                readout.mask[n, y - 1 : y + 2, x - 1 : x + 2] = torch.rand(1) + 0.5
                readout.mask[n, y, x] += 1.0
        else:
            size = torch.tensor([SIZE_W - 1, SIZE_H - 1], dtype=torch.float32)
            readout.mu.copy_(2 * torch.tensor(RFS, dtype=torch.float32) / size - 1)
        if kind == "gaussian_dn":  # energy 0 at gray; annuli (reach 6.5 px) that see the patch
            gray = model.features(torch.zeros(1, 1, SIZE_H, SIZE_W))  # (1, F*O, H, W), constant
            readout.energy_offset.copy_(gray[0, ::4, 0, 0])  # orientation 0 of each feature
            readout.log_widths.copy_(torch.log(torch.tensor([1.0, 1.5])).expand(len(RFS), 2))
            readout.kappa.fill_(1.0)
    return model


def _stimulus_at(patch, x, y):
    """Patch (h, w) on a gray (0) canvas with its centre pixel at (x, y)."""
    canvas = torch.zeros(patch.shape[0], 1, SIZE_H, SIZE_W)
    ph, pw = patch.shape[-2:]
    canvas[:, 0, y - ph // 2 : y + ph // 2 + 1, x - pw // 2 : x + pw // 2 + 1] = patch
    return canvas


@pytest.mark.parametrize("kind", ["gaussian", "factorized", "gaussian_dn"])
def test_at_rf_equals_stimulus_moved_onto_each_rf(kind):
    model = _model(kind)
    np.testing.assert_allclose(model.rf_positions("s"), RFS, atol=1e-4)
    patch = torch.randn(3, 5, 5)
    cx, cy = (SIZE_W - 1) // 2, (SIZE_H - 1) // 2
    with torch.no_grad():
        fast = model.at_rf(_stimulus_at(patch, cx, cy), "s")  # (B, N)
        direct = torch.stack(
            [model(_stimulus_at(patch, x, y), "s")[:, n] for n, (x, y) in enumerate(RFS)], 1
        )
    assert fast.shape == direct.shape == (3, len(RFS))
    assert torch.allclose(fast, direct, atol=1e-5)
    # ... and the fast path is not trivially the response to the centred stimulus.
    with torch.no_grad():
        centred = model(_stimulus_at(patch, cx, cy), "s")
    assert (centred - direct).abs().max() > 1e-3


def test_border_rule_widens_by_the_normalisation_pool():
    """The fast path is exact only where a neuron's annulus lies inside the canvas, so the
    border margin grows by the pool's reach (4.3 so = 6.45 px here)."""
    from insilico.twin_adapter import TwinResponseModel

    plain, dn = (
        TwinResponseModel(_model("gaussian"), "s"),
        TwinResponseModel(_model("gaussian_dn"), "s"),
    )
    assert plain.twin.pool_reach("s") == 0 and dn.twin.pool_reach("s") == pytest.approx(6.45)
    assert not plain.border_mask().any()  # hidden reach 2 px, RFs >= 6 px from the edge
    np.testing.assert_array_equal(dn.border_mask(), [True, True, True, True, False])


def test_forward_takes_the_scan_as_data_key_like_neuralpredictors():
    """``twin(x, data_key=scan)`` (neuralpredictors' keyword) equals ``twin(x, scan)``; None
    selects the only scan, and is refused when there are several."""
    torch.manual_seed(0)
    core = {"features": (2,), "orientations": 4, "kernel_sizes": (5,)}
    x = torch.randn(3, 1, SIZE_H, SIZE_W)
    two = Twin(core, {"type": "gaussian"}, {"a": 2, "b": 3}, (SIZE_H, SIZE_W)).eval()
    with torch.no_grad():
        assert two(x, data_key="b").shape == (3, 3)
        torch.testing.assert_close(two(x, data_key="b"), two(x, "b"))
        assert not torch.allclose(two(x, data_key="a"), two(x, "b")[:, :2])
        with pytest.raises(ValueError, match="pass data_key"):
            two(x)
        one = Twin(core, {"type": "gaussian"}, {"a": 2}, (SIZE_H, SIZE_W)).eval()
        torch.testing.assert_close(one(x), one(x, data_key="a"))


@pytest.mark.parametrize("kind", sorted(READOUTS))
def test_own_drive_equals_the_whole_core_and_its_gradient(kind, monkeypatch):
    """Twin.own_drive (the cone of each read point for one-point readouts) gives own's drive
    and image gradient, for read points on the canvas edge and between pixels."""
    torch.manual_seed(2)
    model = Twin(
        {"features": (3, 2, 2), "orientations": 4, "kernel_sizes": (5, 3, 3)},
        {"type": kind},
        {"s": 6},
        (22, 30),
        downsample=2,
    ).eval()
    readout = model.readouts["s"]
    if kind != "factorized":
        with torch.no_grad():
            readout.mu.copy_(
                torch.tensor([[-1, -1], [1, 1], [1, -1], [-1, 1], [0.3, -0.45], [0, 0]])
            )
    x = torch.randn(6, 1, 22, 30, requires_grad=True)
    idx = torch.tensor([0, 1, 2, 3, 4, 5])
    whole = readout.own(model.features(x), idx)
    (grad_whole,) = torch.autograd.grad(whole.sum(), x)
    if readout.reads_one_point:  # the whole core must not run
        monkeypatch.setattr(model.core, "forward", None)
    cone = model.own_drive(x, "s", idx)
    (grad_cone,) = torch.autograd.grad(cone.sum(), x)
    torch.testing.assert_close(cone, whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad_cone, grad_whole, atol=1e-6, rtol=1e-5)
    assert grad_whole.abs().sum() > 0
