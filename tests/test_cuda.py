"""The CUDA paths against the CPU: mixed-precision training, the core's equivariance, the bar-code
alignment, the in-silico searches and batteries, and batched MEIs.

Skipped without CUDA. ``V1TWIN_TEST_DEVICE=cpu`` runs them with the CPU in the device's place (a
dry run of the tests themselves: the comparisons then hold trivially). On CUDA, convolutions and
matmuls may use TF32 (PyTorch's default for cuDNN convolutions), so float32 results are compared
at ~1e-3 relative, not at the CPU tests' 1e-4; training runs under bfloat16 autocast
(``twin.training.autocast``), compared at a few percent.
"""

import copy
import math
import os

import numpy as np
import pytest
import torch
from test_clustering_alignment import FAST, gp_readouts, within_type_distance
from test_fast_path import GRID, POS_HALF, _set_positions
from test_twin_core import _random_eval_core
from test_twin_training import ARCH, synthetic_scan

from clustering import alignment
from clustering.alignment import CyclicAligner
from clustering.rotation import rotate
from insilico import twin_adapter
from insilico.mei import mei
from insilico.twin_adapter import TwinResponseModel
from twin.data import ScanData
from twin.presets import get_preset
from twin.training import TrainConfig, autocast, build_model, fit

DEVICE = torch.device(os.environ.get("V1TWIN_TEST_DEVICE", "cuda"))
pytestmark = [
    pytest.mark.skipif(
        DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="no CUDA device"
    ),
    pytest.mark.usefixtures("one_torch_thread"),  # the CPU halves are small problems
]
TF32 = 2e-3  # relative tolerance of float32 work that may run in TF32 on the device


def _close(a, b, rtol=TF32):
    """|a - b| <= rtol * max|b| elementwise (numpy or torch, any device)."""
    a, b = (np.asarray(torch.as_tensor(v).detach().cpu(), dtype=np.float64) for v in (a, b))
    assert a.shape == b.shape
    err, scale = np.abs(a - b).max(), np.abs(b).max()
    assert err <= rtol * scale, f"max |diff| {err:.3g} > {rtol} x {scale:.3g}"


@pytest.fixture(scope="module")
def scans():
    return [synthetic_scan("a", 12, seed=1), synthetic_scan("b", 8, seed=2)]


def test_mixed_precision_forward_matches_float32_cpu(scans):
    """The forward pass under the training's autocast on the device vs float32 on the CPU."""
    model = build_model(get_preset("paper"), scans, seed=0).eval()
    x = torch.from_numpy(model.standardize(scans[0].images[:16]))
    with torch.no_grad():
        ref = model(x, "a")
        dev = copy.deepcopy(model).to(DEVICE)
        with autocast(DEVICE):
            out = dev(x.to(DEVICE), "a")
    assert out.device.type == DEVICE.type and torch.isfinite(out).all()
    _close(out.float(), ref, rtol=3e-2)


def test_training_on_device_lowers_the_loss_like_the_cpu(scans):
    """Three epochs of `fit` on the device and on the CPU from the same weights: finite losses
    that fall, first-epoch losses within 10% (readout noise comes from each device's own RNG and
    the device computes in bfloat16), and a validation correlation that rises on both."""
    config = TrainConfig(lr=1e-2, batch_size=32, max_epochs=3, patience=5, seed=3)
    histories = {}
    for device in ("cpu", DEVICE.type):
        model = build_model(ARCH, scans, seed=0)
        histories[device] = fit(model, scans, TrainConfig(**{**config.to_dict(), "device": device}))
        assert next(model.parameters()).device.type == device
    cpu, dev = histories["cpu"], histories[DEVICE.type]
    assert dev["device"].startswith(DEVICE.type)
    for h in (cpu, dev):
        assert np.all(np.isfinite(h["train_loss"])) and h["train_loss"][-1] < h["train_loss"][0]
        assert h["best_val_corr"] > h["initial_val_corr"] + 0.05
    assert abs(dev["train_loss"][0] - cpu["train_loss"][0]) <= 0.1 * abs(cpu["train_loss"][0])


def test_core_is_equivariant_on_device():
    """The CPU equivariance test's statement on the device: a 90-degree rotation of the input
    rotates the output and shifts the orientation axis by O/4; and the device equals the CPU."""
    core = _random_eval_core(8)
    x = torch.randn(2, 1, 19, 19)
    with torch.no_grad():
        ref = core(x)
        dev = copy.deepcopy(core).to(DEVICE)
        out = dev(x.to(DEVICE))
        out_rot = dev(torch.rot90(x, 1, dims=(-2, -1)).to(DEVICE))
    b, _, h, w = out.shape
    expected = torch.roll(torch.rot90(out, 1, dims=(-2, -1)).view(b, -1, 8, h, w), 2, dims=2)
    _close(out_rot.view(b, -1, 8, h, w), expected)
    _close(out, ref)
    unshifted = torch.rot90(out, 1, dims=(-2, -1)).view(b, -1, 8, h, w)
    assert (out_rot.view(b, -1, 8, h, w) - unshifted).abs().max() > 1e-2 * out.abs().max()


def _circular_spread(a, b) -> float:
    """Largest |a - b| (radians) after removing the circular mean difference."""
    d = np.angle(np.exp(1j * (np.asarray(a) - np.asarray(b))))
    return float(np.abs(np.angle(np.exp(1j * (d - np.angle(np.exp(1j * d).mean()))))).max())


@pytest.mark.parametrize("sampled", [False, True])
def test_alignment_on_device_matches_cpu(sampled, monkeypatch):
    """CyclicAligner (von Mises relaxation, beta sweep, Eq. 3 polish) on the device and on the CPU:
    the same chosen beta, angles within 0.05 rad (up to one common rotation), Eq. 3 within 2%,
    and the device's alignment as good as the truth allows (the CPU test's bound). ``sampled``:
    random partner pairs (the path of large N) instead of all pairs."""
    if sampled:
        monkeypatch.setattr(alignment, "_MAX_EXACT_ELEMENTS", 10)
    x, types, angles = gp_readouts(seed=0)
    fits = {d: CyclicAligner(**FAST, device=d).fit(x) for d in ("cpu", DEVICE.type)}
    cpu, dev = fits["cpu"], fits[DEVICE.type]
    assert dev.beta_ == cpu.beta_
    assert _circular_spread(dev.angles_, cpu.angles_) < 0.05
    assert abs(dev.eq3_ - cpu.eq3_) <= 0.02 * cpu.eq3_
    oracle = within_type_distance(rotate(x, -angles), types)
    assert within_type_distance(dev.transform(x), types) <= 1.1 * oracle


@pytest.fixture(scope="module")
def twins():
    """The fast-path tests' small twin (36 x 64, 'cpu' core at full resolution, RFs on
    half-integer pixels, two near the border) on the CPU and on the device."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    t, n = 40, len(POS_HALF)
    scan = ScanData(
        "s",
        rng.uniform(0, 255, (t, 1, 36, 64)),
        rng.poisson(2.0, (t, n)),
        np.array(["train"] * 30 + ["validation"] * 10),
        np.arange(t),
    )
    cpu = get_preset("cpu")
    tw = build_model(
        {"core": cpu.core, "readout": cpu.readout, "downsample": 1}, [scan], seed=0
    ).eval()
    _set_positions(tw, POS_HALF)
    return TwinResponseModel(tw, "s"), TwinResponseModel(copy.deepcopy(tw).to(DEVICE), "s")


def test_optimal_gabor_and_battery_on_device_match_cpu(twins):
    """The pipeline's search (fast path, direct re-scoring, direct path at the border) and tuning
    battery on the device vs the CPU: best responses and every tuning curve within TF32
    tolerance; the chosen Gabors agree wherever the CPU's best beats its runner-up clearly."""
    cpu_m, dev_m = twins
    with torch.no_grad():
        cpu = twin_adapter.optimal_gabor(cpu_m, GRID)
        dev = twin_adapter.optimal_gabor(dev_m, GRID)
    assert cpu.border.values.any() and not cpu.border.values.all()
    _close(dev.response.values, cpu.response.values)
    same = np.isclose(dev.orientation.values, cpu.orientation.values) & np.isclose(
        dev.sf.values, cpu.sf.values
    )
    assert same.mean() >= 0.75, same
    with torch.no_grad():
        cpu_curves, cpu_idx = twin_adapter.run_battery(cpu_m, cpu)
        dev_curves, dev_idx = twin_adapter.run_battery(dev_m, cpu)
    for name in cpu_curves.data_vars:
        _close(dev_curves[name].values, cpu_curves[name].values)
    np.testing.assert_allclose(dev_idx.to_numpy(float), cpu_idx.to_numpy(float), atol=1e-2)


def test_batched_mei_on_device_matches_cpu(twins):
    """20 steps of batched MEI ascent from one white-noise init on the device and the CPU: the
    images point the same way (cosine > 0.99) and the final responses agree to 1%."""
    cpu_m, dev_m = twins
    init = torch.randn(len(POS_HALF), 1, 36, 64, generator=torch.Generator().manual_seed(0))
    kw = dict(init=init, norm=10.0, steps=20, smooth_sigma=1.0)
    cpu, dev = mei(cpu_m, **kw), mei(dev_m, **kw)
    assert dev.images.device.type == DEVICE.type
    a, b = dev.images.cpu().flatten(1).double(), cpu.images.flatten(1).double()
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    assert cos.min() > 0.99, cos
    _close(dev.responses, cpu.responses, rtol=1e-2)
    assert math.isfinite(float(dev.history[-1]))
