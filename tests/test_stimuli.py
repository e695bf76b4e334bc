"""Closed-form checks of insilico.stimuli (DT Eq. 1-2, 9-10, plaids)."""

import math

import numpy as np
import pytest
import torch

from insilico.stimuli import dog, gabor, grating_grid, plaid

C = dict(height=36, width=64)  # the canvas


def test_gabor_shape_dtype_and_peak():
    g = gabor(x=32.0, y=18.0, size=10.0, sf=0.08, contrast=2.5, orientation=0.3, phase=0.0, **C)
    assert g.shape == (1, 1, 36, 64) and g.dtype == torch.float32
    # value a/2 at the centre for phase 0, and it is the maximum
    assert g[0, 0, 18, 32].item() == pytest.approx(1.25, abs=1e-6)
    assert g.max().item() == pytest.approx(1.25, abs=1e-6)


def test_gabor_matches_formula_pointwise():
    # DT Eq. 1-2 written out by hand with x = column, y = row
    x0, y0, sig, nu, a, phi, tau = 30.3, 16.7, 12.0, 0.06, 1.7, 0.7, 0.4
    g = gabor(x0, y0, sig, nu, a, phi, tau, **C)[0, 0].numpy().astype(np.float64)
    i, j = np.mgrid[0:36, 0:64].astype(np.float64)
    di, dj = i - y0, j - x0
    R = np.array([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]])
    ij = np.stack([di, dj], -1) @ R.T
    ip, jp = ij[..., 0], ij[..., 1]
    ref = a / 2 * np.exp(-0.5 * (ip**2 + jp**2) / (sig**2 / 4)) * np.cos(2 * np.pi * ip * nu + tau)
    np.testing.assert_allclose(g, ref, atol=1e-5)


def test_orientation_zero_is_horizontal_stripes():
    g = gabor(32.0, 18.0, 1e7, 0.1, 1.0, 0.0, 0.0, **C)[0, 0]  # huge envelope: a grating
    # constant along each row, varies down the rows
    assert torch.allclose(g, g[:, :1].expand_as(g), atol=1e-6)
    assert g[:, 32].std() > 0.2


def test_rotation_by_quarter_turn_is_exact_rotation_of_pixels():
    # square canvas, centred: gabor(phi + pi/2)[y + a, x + b] == gabor(phi)[y - b, x + a]
    kw = dict(x=16.0, y=16.0, size=9.0, sf=0.09, contrast=1.0, height=33, width=33)
    for phi, tau in [(0.0, 0.0), (0.4, 0.9), (1.1, -0.5)]:
        g0 = gabor(orientation=phi, phase=tau, **kw)[0, 0]
        g1 = gabor(orientation=phi + math.pi / 2, phase=tau, **kw)[0, 0]
        # G1[a, b] = G0[-b, a] (offsets from the centre) == torch.rot90(G0, k=-1)
        torch.testing.assert_close(g1, torch.rot90(g0, k=-1), atol=1e-5, rtol=0)
    # for the even Gabor, a quarter turn about the centre is the transpose
    g0 = gabor(orientation=0.0, phase=0.0, **kw)[0, 0]
    g1 = gabor(orientation=math.pi / 2, phase=0.0, **kw)[0, 0]
    torch.testing.assert_close(g1, g0.T, atol=1e-6, rtol=0)


def test_half_turn_flips_phase_and_phase_pi_negates():
    kw = dict(x=31.2, y=17.6, size=11.0, sf=0.07, contrast=1.3, **C)
    a = gabor(orientation=0.5 + math.pi, phase=0.8, **kw)
    b = gabor(orientation=0.5, phase=-0.8, **kw)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    c = gabor(orientation=0.5, phase=0.8 + math.pi, **kw)
    d = gabor(orientation=0.5, phase=0.8, **kw)
    torch.testing.assert_close(c, -d, atol=1e-5, rtol=0)


def test_dog_without_surround_is_gaussian():
    d = dog(x=30.0, y=15.0, sigma_center=3.0, sigma_surround=8.0, a_center=2.0, a_surround=0.0, **C)
    i, j = torch.meshgrid(torch.arange(36.0), torch.arange(64.0), indexing="ij")
    ref = 2.0 * torch.exp(-((i - 15) ** 2 + (j - 30) ** 2) / (2 * 9.0))
    torch.testing.assert_close(d[0, 0], ref, atol=1e-6, rtol=0)
    assert d[0, 0, 15, 30].item() == pytest.approx(2.0)


def test_dog_sum_matches_gaussian_integrals():
    sc, ss, ac, asur = 2.5, 6.0, 1.5, 0.4
    d = dog(
        x=100.0,
        y=100.0,
        sigma_center=sc,
        sigma_surround=ss,
        a_center=ac,
        a_surround=asur,
        height=201,
        width=201,
    )
    analytic = ac * ((1 + asur) * 2 * math.pi * sc**2 - asur * 2 * math.pi * ss**2)
    assert d.double().sum().item() == pytest.approx(analytic, rel=1e-4)
    assert d[0, 0, 100, 100].item() == pytest.approx(ac, abs=1e-6)  # DT Eq. 9: peak a_c


def test_off_centre_dog_is_the_negated_on_centre_dog():
    # DT Eq. 9: a_c scales the whole centre-surround profile, so an OFF centre (a_c < 0) keeps an
    # antagonistic (here ON) surround: dark centre, bright ring.
    kw = dict(
        x=30.0, y=15.0, sigma_center=2.0, sigma_surround=6.0, a_surround=0.5, height=36, width=64
    )
    on, off = dog(a_center=1.5, **kw), dog(a_center=-1.5, **kw)
    torch.testing.assert_close(off, -on, atol=1e-6, rtol=0)
    assert off[0, 0, 15, 30] < 0 < off[0, 0, 15, 37]  # 7 px out: surround dominates


def test_plaid_is_sum_of_two_gabors():
    kw = dict(x=33.0, y=17.0, size=10.0, sf=0.08, phase=0.3, **C)
    p = plaid(contrast=1.0, orientation=0.2, orthogonal_contrast=0.6, **kw)
    g = gabor(contrast=1.0, orientation=0.2, **kw) + gabor(
        contrast=0.6, orientation=0.2 + math.pi / 2, **kw
    )
    torch.testing.assert_close(p, g, atol=1e-6, rtol=0)
    p0 = plaid(contrast=1.0, orientation=0.2, orthogonal_contrast=0.0, **kw)
    torch.testing.assert_close(p0, gabor(contrast=1.0, orientation=0.2, **kw), atol=1e-7, rtol=0)


def test_batching_equals_one_by_one():
    g = torch.Generator().manual_seed(0)
    B = 7
    x = 20 + 20 * torch.rand(B, generator=g)
    y = 10 + 15 * torch.rand(B, generator=g)
    size = 5 + 10 * torch.rand(B, generator=g)
    sf = 0.04 + 0.06 * torch.rand(B, generator=g)
    a = torch.rand(B, generator=g)
    phi = math.pi * torch.rand(B, generator=g)
    tau = 2 * math.pi * torch.rand(B, generator=g)
    batch = gabor(x, y, size, sf, a, phi, tau, **C)
    assert batch.shape == (B, 1, 36, 64)
    for b in range(B):
        one = gabor(
            x[b].item(),
            y[b].item(),
            size[b].item(),
            sf[b].item(),
            a[b].item(),
            phi[b].item(),
            tau[b].item(),
            **C,
        )
        torch.testing.assert_close(batch[b : b + 1], one, atol=1e-6, rtol=0)
    # scalars broadcast against tensors
    mixed = gabor(32.0, 18.0, size, 0.08, 1.0, phi, 0.0, **C)
    for b in range(B):
        torch.testing.assert_close(
            mixed[b : b + 1],
            gabor(32.0, 18.0, size[b].item(), 0.08, 1.0, phi[b].item(), 0.0, **C),
            atol=1e-6,
            rtol=0,
        )
    dd = dog(x, y, size / 3, size, a, a, **C)
    for b in range(B):
        torch.testing.assert_close(
            dd[b : b + 1],
            dog(
                x[b].item(),
                y[b].item(),
                size[b].item() / 3,
                size[b].item(),
                a[b].item(),
                a[b].item(),
                **C,
            ),
            atol=1e-6,
            rtol=0,
        )


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        gabor(torch.zeros(3), 18.0, 10.0, 0.08, 1.0, torch.zeros(4), 0.0, **C)
    with pytest.raises(ValueError):
        gabor(torch.zeros(2, 2), 18.0, 10.0, 0.08, 1.0, 0.0, 0.0, **C)


def test_grating_grid_product_and_order():
    params, shape = grating_grid(
        x=32.0,
        y=18.0,
        size=[5.0, 10.0],
        sf=[0.05, 0.08, 0.1],
        contrast=1.0,
        orientation=torch.linspace(0, math.pi, 4),
        phase=[0.0, 1.0],
    )
    assert shape == (2, 3, 4, 2)
    assert set(params) == {"x", "y", "size", "sf", "contrast", "orientation", "phase"}
    for t in params.values():
        assert t.shape == (48,) and t.dtype == torch.float32
    # first axis slowest
    assert params["size"].reshape(shape)[1, 0, 0, 0] == 10.0
    assert params["phase"].reshape(shape)[0, 0, 0, 1] == 1.0
    assert torch.all(params["x"] == 32.0)
    stim = gabor(**params, **C)
    assert stim.shape == (48, 1, 36, 64)
    s = stim.reshape(*shape, 36, 64)
    torch.testing.assert_close(
        s[1, 2, 3, 1], gabor(32.0, 18.0, 10.0, 0.1, 1.0, math.pi, 1.0, **C)[0, 0]
    )
    # plaids through the grid too
    params, shape = grating_grid(
        x=32.0,
        y=18.0,
        size=8.0,
        sf=0.08,
        contrast=[0.5, 1.0],
        orientation=0.0,
        phase=0.0,
        orthogonal_contrast=[0.0, 0.5, 1.0],
    )
    assert shape == (2, 3) and plaid(**params, **C).shape == (6, 1, 36, 64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda():
    dev = torch.device("cuda")
    g = gabor(torch.tensor([32.0], device=dev), 18.0, 10.0, 0.08, 1.0, 0.0, 0.0, **C)
    assert g.device.type == "cuda"
    torch.testing.assert_close(g.cpu(), gabor(32.0, 18.0, 10.0, 0.08, 1.0, 0.0, 0.0, **C))
