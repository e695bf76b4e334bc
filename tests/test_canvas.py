"""The model canvas and stimulus units: images area-averaged onto the canvas, stimuli defined on
each model's own canvas, sizes and spatial frequencies in degrees of visual angle."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from insilico import search, units
from insilico.model import canvas_center
from twin.data import ScanData, to_canvas


def test_to_canvas_is_the_block_mean_and_keeps_the_field_of_view():
    rng = np.random.default_rng(0)
    small = rng.uniform(0, 255, (5, 1, 36, 64)).astype(np.float32)
    stored = np.kron(small, np.ones((1, 1, 4, 4), np.float32))  # 144 x 256, 4 x 4 blocks
    np.testing.assert_allclose(to_canvas(stored, (36, 64)), small, rtol=1e-6)
    half = to_canvas(stored, (72, 128))
    np.testing.assert_allclose(half, np.kron(small, np.ones((1, 1, 2, 2))), rtol=1e-6)
    assert to_canvas(small, (36, 64)) is small  # already on the canvas: untouched


def test_to_canvas_names_both_shapes_when_the_canvas_cannot_be_made():
    images = np.zeros((2, 1, 144, 256), np.float32)
    with pytest.raises(ValueError, match=r"scan 'a'.*144 x 256.*36 x 36"):
        to_canvas(images, (36, 36), "scan 'a'")  # another aspect ratio
    with pytest.raises(ValueError, match=r"144 x 256.*288 x 512"):
        to_canvas(images, (288, 512))  # larger than the images


def test_scan_on_canvas_keeps_trials():
    images = np.ones((4, 1, 72, 128), np.float32)
    scan = ScanData("s", images, np.ones((4, 2)), ["train"] * 4, np.arange(4))
    small = scan.on_canvas((36, 64))
    assert small.image_shape == (36, 64) and small.n_neurons == 2
    np.testing.assert_array_equal(small.image_ids, scan.image_ids)


def test_sensorium_pixels_per_degree_and_its_limits():
    # the screen's centre: W / 55 cm * 15 cm per radian
    assert units.sensorium_pixels_per_degree((144, 256)) == pytest.approx(
        256 / 55 * 15 * math.pi / 180
    )
    assert units.sensorium_pixels_per_degree((36, 64)) == pytest.approx(0.3046, abs=1e-4)
    with pytest.raises(ValueError, match=r"scan 'x'.*100 x 100.*pixels_per_degree"):
        units.sensorium_pixels_per_degree((100, 100), "scan 'x'")
    # given for the stored images, scaled to the canvas
    ppd = units.canvas_pixels_per_degree(2.0, (100, 100), (50, 50), "scan 'x'")
    assert ppd == pytest.approx(1.0)


def test_named_grids_are_the_same_degrees_on_any_canvas():
    a, b = search.GaborGrid.cpu(0.3), search.GaborGrid.cpu(0.6)
    np.testing.assert_allclose(np.array(b.sizes), 2 * np.array(a.sizes))
    np.testing.assert_allclose(np.array(b.sfs), np.array(a.sfs) / 2)
    np.testing.assert_allclose(np.array(a.sizes) / 0.3, search.CPU_GABOR_DEG["sizes"])
    d = search.DoGGrid.paper(0.5)
    np.testing.assert_allclose(d.sigma_center, np.array(search.PAPER_DOG_DEG["sigma_center"]) / 2)


def test_canvas_center_is_one_definition():
    from twin.model import Twin

    assert canvas_center((36, 64)) == (31.5, 17.5)
    twin = Twin(
        {"features": (2,), "orientations": 4, "kernel_sizes": (5,)},
        {"type": "gaussian"},
        {"s": 3},
        (72, 128),
    )
    assert twin.center == canvas_center((72, 128)) == (63.5, 35.5)


class Finer(torch.nn.Module):
    """A response model on a canvas ``factor`` times finer than ``model``'s, showing the same
    visual field: its images are area-averaged onto the coarse canvas and passed to ``model``.
    The same neurons, probed through a model with a finer canvas."""

    def __init__(self, model, factor: int):
        super().__init__()
        self.model, self.factor = model, factor
        self.image_shape = tuple(factor * s for s in model.image_shape)
        self.pixels_per_degree = factor * model.pixels_per_degree
        self.rf_positions = (model.rf_positions + 0.5) * factor - 0.5  # pixel centres
        self.preferred_orientations = model.preferred_orientations

    def forward(self, x):
        return self.model(F.avg_pool2d(x, self.factor))


@pytest.fixture(scope="module")
def virtual_v1():
    from simulator import VirtualV1

    torch.manual_seed(0)
    return VirtualV1(n_neurons=8, seed=3)


def test_same_neuron_same_optimal_gabor_in_degrees_at_36x64_and_72x128(virtual_v1):
    coarse, fine = virtual_v1, Finer(virtual_v1, 2)
    assert fine.image_shape == (72, 128)
    found = {}
    for name, m in (("36x64", coarse), ("72x128", fine)):
        ppd = m.pixels_per_degree
        grid = search.GaborGrid.in_degrees(
            ppd,
            offsets=(-4.0, 4.0),
            sizes=(13.0, 20.0, 26.0),
            sfs=(0.02, 0.03, 0.05),
            contrasts=(4.0,),
            orientations=tuple(np.arange(8) * math.pi / 8),
            phases=tuple(np.arange(4) * math.pi / 2),
        )  # 4 positions x 3 sizes x 3 sfs x 8 orientations x 4 phases = 1,152 stimuli
        best = units.in_degrees(search.optimal_gabor(m, grid), ppd)
        cx, cy = canvas_center(m.image_shape)
        best["x_deg"], best["y_deg"] = (best.x - cx) / ppd, (best.y - cy) / ppd
        found[name] = best
    a, b = found["36x64"], found["72x128"]
    # the same grid point in degrees for (nearly) every neuron: at most one grid step apart
    steps = {"size_deg": (13.0, 20.0, 26.0), "sf_cpd": (0.02, 0.03, 0.05)}
    for k, axis in steps.items():
        ia = np.searchsorted(axis, np.round(a[k].values, 4))
        ib = np.searchsorted(axis, np.round(b[k].values, 4))
        assert np.all(np.abs(ia - ib) <= 1), k
        assert np.mean(ia == ib) >= 0.75, k
    # positions (RF + an offset of +-4 degrees) at most one offset step (8 degrees) apart
    assert np.all(np.abs(a.x_deg - b.x_deg) <= 8.0 + 1e-6)
    assert np.all(np.abs(a.y_deg - b.y_deg) <= 8.0 + 1e-6)
    assert np.mean(np.isclose(a.x_deg, b.x_deg) & np.isclose(a.y_deg, b.y_deg)) >= 0.75
    d_ori = np.abs((a.orientation - b.orientation + math.pi / 2) % math.pi - math.pi / 2)
    assert np.all(d_ori <= math.pi / 8 + 1e-6)
    # the degrees are the grid's on both canvases; in pixels the same Gabor is twice as large
    same = np.isclose(a.size_deg, b.size_deg)
    np.testing.assert_allclose(b["size"].values[same] / a["size"].values[same], 2.0, rtol=1e-5)
