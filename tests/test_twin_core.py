"""Hermite basis rotations and the rotation-equivariant core."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from twin.core import RotationEquivariantCore
from twin.hermite import hermite_basis, n_basis, rotation_matrices, rotation_matrix, synthesize


def test_basis_shape_and_orthonormality():
    basis = hermite_basis(41, 5, sigma=4.0)
    assert basis.shape == (n_basis(5), 41, 41) == (15, 41, 41)
    flat = basis.reshape(15, -1)
    # Orthonormal in the continuum; on a fine grid the Gram matrix is sigma^2 * identity.
    np.testing.assert_allclose(flat @ flat.T / 4.0**2, np.eye(15), atol=1e-6)


@pytest.mark.parametrize("size", [13, 12])
def test_rotation_by_90_degrees_is_exact(size):
    rng = np.random.default_rng(0)
    basis = hermite_basis(size, 6)
    c = rng.normal(size=n_basis(6))
    image = synthesize(c, basis)
    rotated = synthesize(rotation_matrix(np.pi / 2, 6) @ c, basis)
    np.testing.assert_allclose(rotated, np.rot90(image, 1), atol=1e-12)
    assert not np.allclose(rotated, image, atol=1e-3)


def test_rotation_by_arbitrary_angle_matches_resampled_image():
    rng = np.random.default_rng(1)
    basis = hermite_basis(81, 4, sigma=8.0)  # finely sampled, all support inside the patch
    c = rng.normal(size=n_basis(4))
    image = synthesize(c, basis)
    expected = ndimage.rotate(image, 30.0, reshape=False, order=3)  # counter-clockwise as displayed
    rotated = synthesize(rotation_matrix(np.deg2rad(30.0), 4) @ c, basis)
    assert np.abs(rotated - expected).max() < 1e-2 * np.abs(image).max()
    assert np.abs(image - expected).max() > 0.1 * np.abs(image).max()


def test_rotation_matrices_form_a_cyclic_orthogonal_group():
    mats = rotation_matrices(8, 5)
    np.testing.assert_allclose(mats[0], np.eye(15), atol=1e-12)
    np.testing.assert_allclose(mats[1] @ mats[1].T, np.eye(15), atol=1e-12)
    np.testing.assert_allclose(np.linalg.matrix_power(mats[1], 3), mats[3], atol=1e-12)
    np.testing.assert_allclose(np.linalg.matrix_power(mats[1], 8), np.eye(15), atol=1e-12)


def _random_eval_core(orientations, seed=0, dilations=None, surround_sigmas=(), padding="gray"):
    torch.manual_seed(seed)
    core = RotationEquivariantCore(
        features=(3, 4, 2),
        orientations=orientations,
        kernel_sizes=(7, 5, 3),
        dilations=dilations,
        surround_sigmas=surround_sigmas,
        padding=padding,
    )
    # non-trivial batch-norm statistics, shared across orientations
    for norm in [*core.norms, *core.surround_norms]:
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.data.normal_()
        norm.bias.data.normal_()
    return core.eval()


@pytest.mark.parametrize(
    "orientations, dilations, sigmas",
    [(8, None, ()), (4, None, ()), (8, (1, 2, 3), ()), (8, None, (1.5, 4.0))],
)
def test_core_is_equivariant_to_90_degree_rotation(orientations, dilations, sigmas):
    core = _random_eval_core(orientations, dilations=dilations, surround_sigmas=sigmas)
    x = torch.randn(2, 1, 19, 19)
    with torch.no_grad():
        out = core(x)
        out_rot = core(torch.rot90(x, 1, dims=(-2, -1)))
    b, c, h, w = out.shape
    # 'same' padding; F_last * O channels, plus F_hidden * O per surround sigma
    assert (c, h, w) == ((2 + 4 * len(sigmas)) * orientations, 19, 19) == (core.out_channels, h, w)
    k = orientations // 4  # 90 degrees counter-clockwise = k steps of 2*pi/O
    # out(rot x)[:, f, o] == rot(out(x))[:, f, (o - k) % O]: roll forward along the orientation
    # axis.
    expected = torch.roll(
        torch.rot90(out, 1, dims=(-2, -1)).view(b, -1, orientations, h, w), k, dims=2
    )
    scale = out.abs().max()
    assert torch.allclose(out_rot.view(b, -1, orientations, h, w), expected, atol=1e-4 * scale)
    # Not trivially invariant: the spatial rotation alone, without the shift, does not match.
    unshifted = torch.rot90(out, 1, dims=(-2, -1)).view(b, -1, orientations, h, w)
    assert (out_rot.view(b, -1, orientations, h, w) - unshifted).abs().max() > 1e-2 * scale


def test_channel_order_is_feature_major():
    torch.manual_seed(0)
    core = RotationEquivariantCore(features=(3,), orientations=4, kernel_sizes=(7,)).eval()
    with torch.no_grad():
        core.convs[0].coefficients[1] = 0  # silence feature 1 in all orientations
        out = core(torch.randn(1, 1, 15, 15))
    per_channel = (out - out.mean(dim=(2, 3), keepdim=True)).abs().amax(dim=(0, 2, 3))
    silent = per_channel < 1e-6
    # Feature-major: channels f*O + o, so feature 1 is the contiguous block 4..7.
    assert silent.tolist() == [False] * 4 + [True] * 4 + [False] * 4


def test_filters_of_orientation_o_are_rotated_copies():
    torch.manual_seed(0)
    core = RotationEquivariantCore(features=(2,), orientations=4, kernel_sizes=(9,))
    filt = core.convs[0].filters().detach().view(2, 4, 9, 9)  # (F, O, S, S)
    for o in range(4):
        assert torch.allclose(filt[:, o], torch.rot90(filt[:, 0], o, dims=(-2, -1)), atol=1e-5)


def test_core_rejects_even_kernels_and_mismatched_lengths():
    with pytest.raises(ValueError, match="odd"):
        RotationEquivariantCore(features=(2,), kernel_sizes=(4,))
    with pytest.raises(ValueError, match="differ in length"):
        RotationEquivariantCore(features=(2, 2), kernel_sizes=(5,))


def test_image_layer_fast_path_equals_convolution_with_synthesized_filters():
    torch.manual_seed(0)
    conv = RotationEquivariantCore(features=(3,), orientations=8, kernel_sizes=(9,)).convs[0]
    x = torch.randn(2, 1, 12, 17)
    direct = torch.nn.functional.conv2d(x, conv.filters(), padding=4)
    assert torch.allclose(conv(x), direct, atol=1e-5)


def test_dilated_layer_reaches_dilation_times_farther():
    """A unit impulse reaches (kernel - 1) / 2 * dilation pixels per layer, summed over layers."""
    core = _random_eval_core(8, dilations=(1, 2, 3))
    x = torch.zeros(1, 1, 41, 41)
    x[..., 20, 20] = 1.0
    with torch.no_grad():
        change = (core(x) - core(torch.zeros_like(x))).abs().amax(dim=(0, 1))
    rows = torch.nonzero(change.amax(1) > 1e-6)[:, 0]
    assert (rows.min().item(), rows.max().item()) == (20 - (3 + 2 * 2 + 1 * 3), 20 + (3 + 4 + 3))
    with pytest.raises(ValueError, match="dilations"):
        RotationEquivariantCore(features=(2, 2), kernel_sizes=(5, 3), dilations=(1, 0))


def _gray_padded_and_zero_padded(seed=0):
    cores = []
    for padding in ("gray", "zero"):
        torch.manual_seed(seed)
        cores.append(
            RotationEquivariantCore(
                features=(3, 4, 2), orientations=8, kernel_sizes=(7, 5, 3), padding=padding
            )
        )
    cores[1].load_state_dict(cores[0].state_dict())
    for core in cores:  # the same non-trivial batch-norm statistics
        torch.manual_seed(seed + 1)
        for norm in core.norms:
            norm.running_mean.normal_()
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.data.normal_()
            norm.bias.data.normal_()
    return cores


def test_gray_padding_makes_a_gray_image_uniform_in_training_and_eval():
    """Every hidden layer answers 0 to gray, so a gray image's core output is one constant per
    channel, with batch statistics (a gray image among natural ones) and running ones."""
    gray, zero = _gray_padded_and_zero_padded()
    batch = torch.cat([torch.zeros(1, 1, 24, 30), torch.randn(3, 1, 24, 30)])
    for mode in ("train", "eval"):
        outs = []
        for core in (gray, zero):
            getattr(core, mode)()
            with torch.no_grad():
                out = core(batch)[0]  # the gray image's (C, H, W)
            outs.append((out - out[:, 12:13, 15:16]).abs().max().item())
        assert outs[0] < 1e-5, mode
        assert outs[1] > 1e-2, mode  # zero padding: the edge shows through


def test_gray_padding_is_translation_equivariant_up_to_the_canvas_edge():
    """A small patch on gray, moved 10 px along a 40 px canvas: with gray padding the core output
    moves with it at every pixel, also where the core's receptive field crosses the edge, as long
    as the patch widened by the hidden layers' reach (3 + 2 px) stays on the canvas."""
    gray, zero = _gray_padded_and_zero_padded()
    assert gray.reach(hidden_only=True) == 5 and gray.reach() == 6
    patch = torch.randn(3, 3)
    x = torch.zeros(2, 1, 20, 40)
    x[0, 0, 6:9, 6:9] = patch  # centre (7, 7): 1 + 5 px from the top and left edges
    x[1, 0, 6:9, 16:19] = patch
    diffs = []
    for core in (gray, zero):
        with torch.no_grad():
            out = core.eval()(x)
        diffs.append((out[0, :, :, :30] - out[1, :, :, 10:]).abs().max().item())
    assert diffs[0] < 1e-5
    assert diffs[1] > 1e-2


def test_stored_twins_without_padding_key_keep_zero_padding():
    from twin.model import Twin

    config = Twin(
        {"features": (2,), "kernel_sizes": (5,)}, {"type": "gaussian"}, {"s": 3}, (12, 16)
    ).config
    assert config["core"]["padding"] == "gray"
    del config["core"]["padding"]
    assert Twin.from_config(config).core.padding == "zero"
    with pytest.raises(ValueError, match="padding"):
        RotationEquivariantCore(features=(2,), kernel_sizes=(5,), padding="reflect")


def test_surround_pooling_reaches_far_and_keeps_gray_padding_exact():
    """Surround features (sigma 5 px, truncated at 15 px) see a patch far beyond the convolutions'
    reach (3 + 2 + 1 px), pool energy that falls off with distance like the Gaussian, and, because
    they pool the hidden layer (0 at gray), move with the patch at every pixel although the blur
    crosses the canvas edge."""
    core = _random_eval_core(8, surround_sigmas=(5.0,))
    assert core.reach(hidden_only=True) == 5 and core.reach() == 5 + 15
    assert core.config["surround_sigmas"] == [5.0]
    x = torch.zeros(2, 1, 20, 48)
    patch = torch.randn(3, 3, generator=torch.Generator().manual_seed(1))
    x[0, 0, 9:12, 6:9] = patch  # centre (row 10, col 7): 1 + 5 px from the left edge
    x[1, 0, 9:12, 16:19] = patch
    with torch.no_grad():
        out, gray = core(x), core(torch.zeros(1, 1, 20, 48))
    local, pooled = (out - gray)[:, :16], (out - gray)[:, 16:]
    assert (out[0, :, :, :38] - out[1, :, :, 10:]).abs().max() < 1e-5
    # 14 px right of the patch: beyond every convolution, inside the surround
    assert local[0, :, 10, 21].abs().max() < 1e-6
    assert pooled[0, :, 10, 21].abs().max() > 1e-2 * pooled[0, :, 10, 7].abs().max() > 1e-5
    # the pooled feature is BN(log(1 + sqrt(G * h^2))): undo the batch norm and the log and sqrt,
    # and the energy G * h^2 falls off with distance like the Gaussian, 4 -> 8 px below the patch:
    # by exp(-(8^2 - 4^2) / (2 * 5^2)) = 0.38 for a point (about that for energy spread over the
    # hidden layer's +-5 px); a sigma of 3 px would give 0.07, one of 8 px 0.69
    norm = core.surround_norms[0]
    raw = (out[1, 16:].view(4, 8, 20, 48) - norm.bias.view(-1, 1, 1, 1)) / norm.weight.view(
        -1, 1, 1, 1
    ) * torch.sqrt(norm.running_var + norm.eps).view(-1, 1, 1, 1) + norm.running_mean.view(
        -1, 1, 1, 1
    )
    energy = (torch.expm1(raw).pow(2) - 1e-8).reshape(32, 20, 48)
    assert energy[:, 0, 40].abs().max() < 1e-6  # far from the patch: gray, no energy
    ratio = (energy[:, 18, 17] / energy[:, 14, 17])[energy[:, 14, 17] > 1e-6]
    assert len(ratio) > 8 and ratio.min() > 0.3 and ratio.max() < 0.6
    with pytest.raises(ValueError, match="surround_sigmas"):
        RotationEquivariantCore(features=(2,), kernel_sizes=(5,), surround_sigmas=(3.0,))


@pytest.mark.parametrize("padding", ["gray", "zero"])
@pytest.mark.parametrize("sigmas", [(), (2.0,)])
def test_forward_at_equals_the_whole_core_in_every_window(padding, sigmas):
    """The cone of a window gives the whole core's numbers there, at the canvas edge too."""
    core = _random_eval_core(8, dilations=(1, 1, 3), surround_sigmas=sigmas, padding=padding)
    x = torch.randn(6, 1, 13, 21)
    corners = torch.tensor([[0, 0], [11, 19], [0, 19], [11, 0], [5, 9], [3, 1]])
    with torch.no_grad():
        full = core(x)
        windows = core.forward_at(x, corners)
    assert windows.shape == (6, core.out_channels, 2, 2)
    for b, (r, c) in enumerate(corners.tolist()):
        torch.testing.assert_close(windows[b], full[b, :, r : r + 2, c : c + 2], atol=1e-5, rtol=0)
    core.train()
    with pytest.raises(RuntimeError, match="eval mode"):
        core.forward_at(x, corners)
