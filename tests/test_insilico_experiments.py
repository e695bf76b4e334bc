"""Optimal Gabor / DoG search and in-silico experiments on tiny models with known answers.

The model: each neuron is a linear Gabor filter w_n (known x, y, size, sf, orientation, phase),
response = relu(<w_n, x>) / (1 + beta_n ||x||^2) + eps. beta_n = 0 is a purely linear neuron;
beta_n > 0 divides by the stimulus energy (surround / cross-orientation suppression).
"""

import math

import numpy as np
import pytest
import torch

from insilico import experiments, indices, search
from insilico.model import ResponseModel, canvas_center
from insilico.stimuli import gabor

H, W = 36, 64
EPS = 1e-3


class GaborFilterModel:
    image_shape = (H, W)
    pixels_per_degree = 0.3

    def __init__(self, x, y, size, sf, orientation, phase, beta=None, rf_positions=None):
        def t(v):
            return torch.as_tensor(np.asarray(v, dtype=np.float32))

        self.filters = gabor(
            t(x), t(y), t(size), t(sf), 2.0, t(orientation), t(phase), H, W
        ).flatten(1)
        n = self.filters.shape[0]
        self.beta = torch.zeros(n) if beta is None else t(beta)
        self.rf_positions = (
            np.stack([x, y], 1).astype(float) if rf_positions is None else rf_positions
        )
        self.preferred_orientations = np.asarray(orientation, dtype=float)

    def __call__(self, images):
        x = images.flatten(1)
        lin = torch.relu(x @ self.filters.T)  # (B, N)
        energy = (x * x).sum(1, keepdim=True)
        return lin / (1 + self.beta[None] * energy) + EPS


TRUE = dict(
    x=[20.0, 40.0, 31.0],
    y=[12.0, 20.0, 18.0],
    size=[8.0, 8.0, 8.0],
    sf=[1 / 8, 1 / 6, 1 / 10],
    orientation=[0.0, math.pi / 4, 5 * math.pi / 8],
    phase=[0.0, math.pi / 2, math.pi],
)
GRID = search.GaborGrid(
    offsets=(-1.0, 0.0, 1.0),
    sizes=(8.0, 12.0),
    sfs=(1 / 10, 1 / 8, 1 / 6),
    contrasts=(2.0,),
    orientations=tuple(np.arange(8) * math.pi / 8),
    phases=tuple(np.arange(4) * math.pi / 2),
)


def _ang(a, b, period):
    return np.abs((np.asarray(a) - np.asarray(b) + period / 2) % period - period / 2)


def test_model_satisfies_protocol():
    assert isinstance(GaborFilterModel(**TRUE), ResponseModel)


def test_optimal_gabor_direct_recovers_filter():
    # RF positions given 1 px off the truth: the positional offsets must find it.
    rf = np.stack([TRUE["x"], TRUE["y"]], 1) + np.array([[1.0, 0.0], [0.0, -1.0], [0.0, 0.0]])
    model = GaborFilterModel(**TRUE, rf_positions=rf)
    ds = search.optimal_gabor(model, GRID)
    assert set(ds.data_vars) >= {
        "x",
        "y",
        "size",
        "sf",
        "contrast",
        "orientation",
        "phase",
        "response",
    }
    np.testing.assert_allclose(ds.x.values, TRUE["x"])
    np.testing.assert_allclose(ds.y.values, TRUE["y"])
    np.testing.assert_allclose(ds.sf.values, TRUE["sf"])
    assert np.all(_ang(ds.orientation.values, TRUE["orientation"], math.pi) < 1e-6)
    assert np.all(_ang(ds.phase.values, TRUE["phase"], 2 * math.pi) < 1e-6)
    assert np.all(ds.response.values > 0.1)


def test_centred_path_matches_direct_path():
    model = GaborFilterModel(**TRUE)
    small = search.GaborGrid(
        offsets=(0.0, 1.0),
        sizes=(6.0,),
        sfs=(1 / 8, 1 / 6),
        contrasts=(2.0,),
        orientations=(0.0, math.pi / 4, math.pi / 2),
        phases=tuple(np.arange(4) * math.pi / 2),
    )
    ds_d, r_d = search.optimal_gabor(model, small, return_responses=True)
    # generic image-shifting respond at the canvas centre (half-pixel Fourier shifts onto the RFs)
    ds_c, r_c = search.optimal_gabor(
        model, small, center=canvas_center((H, W)), return_responses=True
    )
    assert r_d.shape == r_c.shape == (len(small), 3)
    torch.testing.assert_close(r_c, r_d, atol=2e-4, rtol=1e-3)
    # a user-supplied respond (the fast-path hook) gets centred stimuli: here the direct one again
    resp = search.direct_respond(model)
    ds_f = search.optimal_gabor(model, small, respond=resp)
    for k in ("x", "y", "sf", "orientation", "phase"):
        np.testing.assert_allclose(ds_f[k].values, ds_d[k].values)
        np.testing.assert_allclose(ds_c[k].values, ds_d[k].values)


def test_cluster_optimal_gabor_shares_parameters():
    # two clusters; within each, same sf and phase, different positions and orientations over
    # [0, 2 pi). Cluster 3 is odd-phase: its neurons at theta and theta + pi are the same cell type
    # rotated, so one shared Gabor must drive all four once each neuron may take its sign.
    tr = dict(
        x=[15.0, 45.0, 20.0, 40.0, 30.0, 52.0],
        y=[10.0, 25.0, 24.0, 12.0, 18.0, 20.0],
        size=[8.0] * 6,
        sf=[1 / 8, 1 / 8, 1 / 6, 1 / 6, 1 / 6, 1 / 6],
        orientation=[
            0.0,
            3 * math.pi / 2,
            math.pi / 4,
            3 * math.pi / 4,
            5 * math.pi / 4,
            7 * math.pi / 4,
        ],
        phase=[0.0, 0.0, math.pi / 2, math.pi / 2, math.pi / 2, math.pi / 2],
    )
    model = GaborFilterModel(**tr)
    folded = np.mod(tr["orientation"], math.pi)  # what a per-neuron search reports: [0, pi)
    clusters = np.array([7, 7, 3, 3, 3, 3])
    ds = search.cluster_optimal_gabor(model, clusters, GRID, orientations=folded)
    assert list(ds.cluster.values) == [3, 7]
    np.testing.assert_allclose(ds.cluster_sf.sel(cluster=7), 1 / 8)
    np.testing.assert_allclose(ds.cluster_sf.sel(cluster=3), 1 / 6)
    assert _ang(ds.cluster_phase.sel(cluster=7), 0.0, math.pi) < 1e-6  # even: sign-free
    np.testing.assert_allclose(ds.sf.values, tr["sf"])
    # per-neuron view: own position and orientation (its sign chosen), the cluster's shared phase
    odd = slice(2, 6)
    assert np.all(_ang(ds.orientation.values[odd], tr["orientation"][odd], 2 * math.pi) < 1e-6)
    assert np.all(_ang(ds.orientation.values, tr["orientation"], math.pi) < 1e-6)
    r = ds.response.values  # nobody silenced by the anti-phase Gabor: all equal up to float error
    np.testing.assert_allclose(r, r.max(), rtol=1e-2)
    np.testing.assert_allclose(ds.x.values, tr["x"])
    np.testing.assert_array_equal(ds.cluster_label.values, clusters)
    # centred path (orientations snapped to the grid, which contains them) agrees
    dc = search.cluster_optimal_gabor(
        model, clusters, GRID, orientations=folded, center=canvas_center((H, W))
    )
    for k in ("cluster_sf", "cluster_phase", "cluster_size", "sf", "phase", "orientation"):
        np.testing.assert_allclose(dc[k].values, ds[k].values)
    np.testing.assert_allclose(dc.cluster_response.values, ds.cluster_response.values, rtol=1e-3)


def test_cluster_optimal_gabor_weights_neurons_by_their_scale():
    # one cluster: a neuron of sf 1/8 with traces 50x larger than two neurons of sf 1/6. The
    # plain mean follows the loud neuron; weighted by 1 / s.d. (standardised responses) the
    # cluster's Gabor is the one that two of its three neurons prefer.
    tr = dict(
        x=[20.0, 32.0, 44.0],
        y=[18.0, 18.0, 18.0],
        size=[8.0] * 3,
        sf=[1 / 8, 1 / 6, 1 / 6],
        orientation=[0.0, 0.0, 0.0],
        phase=[0.0, 0.0, 0.0],
    )
    model = GaborFilterModel(**tr)
    sd = np.array([50.0, 1.0, 1.0])
    model.filters = model.filters * torch.as_tensor(sd, dtype=torch.float32)[:, None]
    clusters = np.zeros(3, int)
    plain = search.cluster_optimal_gabor(model, clusters, GRID)
    weighted = search.cluster_optimal_gabor(model, clusters, GRID, weights=1 / sd)
    np.testing.assert_allclose(plain.cluster_sf.values, 1 / 8)
    np.testing.assert_allclose(weighted.cluster_sf.values, 1 / 6)
    # cluster_response stays the plain mean rate of the chosen Gabor
    np.testing.assert_allclose(weighted.cluster_response.values, weighted.response.values.mean())
    with pytest.raises(ValueError, match="weights must be"):
        search.cluster_optimal_gabor(model, clusters, GRID, weights=[1.0, 0.0, 1.0])


def _dog_filter(x, y, sc, ss, ac, asur):
    """DT Eq. 9-10 written out independently of insilico.stimuli: (H*W,) numpy."""
    i, j = np.mgrid[0:H, 0:W].astype(float)
    r2 = (i - y) ** 2 + (j - x) ** 2
    g = lambda s: np.exp(-r2 / (2 * s**2))  # noqa: E731
    return (ac * ((1 + asur) * g(sc) - asur * g(ss))).ravel()


def test_optimal_dog_finds_centre_sign():
    # centre-surround "neurons": filter = ON DoG at (20, 10), OFF-centre / ON-surround at (45, 25)
    class DoGModel:
        image_shape = (H, W)
        rf_positions = np.array([[20.0, 10.0], [45.0, 25.0]])
        preferred_orientations = None
        f = torch.as_tensor(
            np.stack(
                [_dog_filter(20, 10, 2.0, 6.0, 1.0, 0.5), _dog_filter(45, 25, 2.0, 6.0, -1.0, 0.5)]
            ),
            dtype=torch.float32,
        )

        def __call__(self, images):
            return torch.relu(images.flatten(1) @ self.f.T) + EPS

    g = search.DoGGrid(
        offsets=(-1.0, 0.0, 1.0),
        sigma_center=(1.0, 2.0, 4.0),
        sigma_surround=(3.0, 6.0),
        a_center=(-1.0, 1.0),
        a_surround=(0.0, 0.5),
    )
    ds = search.optimal_dog(DoGModel(), g)
    np.testing.assert_allclose(ds.x.values, [20.0, 45.0])
    np.testing.assert_allclose(ds.y.values, [10.0, 25.0])
    np.testing.assert_array_equal(np.sign(ds.a_center.values), [1.0, -1.0])
    # both find their own antagonistic surround (the filter itself is on the grid)
    np.testing.assert_allclose(ds.a_surround.values, [0.5, 0.5])
    np.testing.assert_allclose(ds.sigma_center.values, [2.0, 2.0])
    np.testing.assert_allclose(ds.sigma_surround.values, [6.0, 6.0])
    dc = search.cluster_optimal_dog(DoGModel(), np.array([0, 1]), g)
    np.testing.assert_array_equal(np.sign(dc.a_center.values), [1.0, -1.0])
    np.testing.assert_allclose(dc.a_surround.values, [0.5, 0.5])


def _params(**over):
    p = {k: np.asarray(v, dtype=float) for k, v in TRUE.items()}
    p["contrast"] = np.full(3, 2.0)
    p.update(over)
    return p


def test_orientation_and_phase_tuning_peak_at_truth():
    model = GaborFilterModel(**TRUE)
    ori = experiments.orientation_tuning(model, _params(), 16)
    assert ori.dims == ("neuron", "orientation") and ori.shape == (3, 16)
    peak = ori.orientation.values[ori.argmax("orientation").values]
    assert np.all(_ang(peak, TRUE["orientation"], math.pi) <= math.pi / 16 + 1e-9)
    rel = experiments.orientation_tuning(
        model, _params(), np.array([-0.4, 0.0, 0.4]), relative=True
    )
    np.testing.assert_array_equal(rel.argmax("orientation").values, [1, 1, 1])
    ph = experiments.phase_tuning(model, _params(), 8)
    peak = ph.phase.values[ph.argmax("phase").values]
    assert np.all(_ang(peak, TRUE["phase"], 2 * math.pi) < 1e-6)
    # linear (rectified) neuron: strongly phase-tuned, orientation-tuned
    assert np.all(indices.phase_index(ph) > 0.6)
    assert np.all(indices.orientation_index(ori) > 0.3)


def test_battery_indices_on_known_model():
    # neuron 0, 1 linear; neuron 2 divisively normalised by stimulus energy
    model = GaborFilterModel(**TRUE, beta=[0.0, 0.0, 0.05])
    p = _params()
    meis = model.filters.reshape(3, 1, H, W)  # the linear neurons' MEI direction
    dp = {
        "x": p["x"],
        "y": p["y"],
        "sigma_center": np.full(3, 2.0),
        "sigma_surround": np.full(3, 6.0),
        "a_center": np.ones(3),
        "a_surround": np.full(3, 0.5),
    }
    curves, df = experiments.run_battery(
        model,
        p,
        dp,
        meis,
        orientations=8,
        phases=8,
        sizes=(2.0, 4.0, 8.0, 16.0, 24.0),
        contrasts=(1.0, 2.0, 4.0),
        plaid_contrasts=(0.0, 1.0, 2.0, 4.0),
        energies=(2.0, 4.0),
        cnn_corr=np.array([0.5, 0.6, 0.7]),
        glm_corr=np.array([0.5, 0.3, 0.35]),
    )
    assert curves["size_contrast"].dims == ("neuron", "contrast", "size")
    assert curves["plaid"].dims == ("neuron", "optimal_contrast", "orthogonal_contrast")
    assert curves["comparison"].dims == ("neuron", "stimulus", "energy")
    assert list(curves["comparison"].stimulus.values) == ["gabor", "dog", "mei"]
    assert {
        "orientation_index",
        "phase_index",
        "suppression_index",
        "contrast_index",
        "plaid_index",
        "gabor_vs_dog",
        "gabor_vs_mei",
        "dog_vs_mei",
        "nonlinearity_index",
    } <= set(df.columns)
    # linear neurons: response grows with size and contrast, orthogonal grating adds ~nothing
    np.testing.assert_allclose(df.suppression_index.values[:2], 0.0, atol=1e-6)
    np.testing.assert_allclose(df.contrast_index.values[:2], 0.0, atol=1e-6)
    assert np.all(np.abs(df.plaid_index.values[:2]) < 0.05)
    # normalised neuron: surround and cross-orientation suppression
    assert df.suppression_index.values[2] > 0.2
    assert df.plaid_index.values[2] > 0.1
    # at matched energy nothing beats the matched filter for a linear neuron
    assert np.all(df.gabor_vs_mei.values[:2] <= 1 + 1e-5)
    assert np.all(df.gabor_vs_mei.values[:2] > df.dog_vs_mei.values[:2])
    np.testing.assert_allclose(df.nonlinearity_index.values, [1.0, 2.0, 2.0])


def test_direct_respond_moves_images_onto_rf():
    model = GaborFilterModel(**TRUE)
    cx, cy = canvas_center((H, W))
    stim = gabor(cx, cy, 8.0, 1 / 8, 2.0, 0.0, 0.0, H, W)  # neuron 0's filter, centred
    r = search.direct_respond(model)(stim)
    direct = model(gabor(20.0, 12.0, 8.0, 1 / 8, 2.0, 0.0, 0.0, H, W))
    torch.testing.assert_close(r[0, 0], direct[0, 0], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError):
        search.cluster_optimal_gabor(model, np.array([0, 1]), GRID)


def test_greedy_gabor_set_covers_centred_neurons():
    # five linear neurons at the canvas centre: three share one Gabor, two share another; one
    # neuron far from the centre is never driven by a screen-centred Gabor.
    cx, cy = canvas_center((H, W))
    tr = dict(
        x=[cx] * 5 + [8.0],
        y=[cy] * 5 + [8.0],
        size=[8.0] * 6,
        sf=[1 / 8] * 3 + [1 / 6] * 2 + [1 / 8],
        orientation=[0.0] * 3 + [math.pi / 2] * 2 + [0.0],
        phase=[0.0] * 6,
    )
    model = GaborFilterModel(**tr)
    optimal = search.optimal_gabor(model, GRID).response.values
    ds = search.greedy_gabor_set([model], optimal, GRID, fraction=0.8, n_select=5)
    assert ds.sizes["rank"] == 2  # nothing covers the off-centre neuron: selection stops
    assert np.all(_ang(ds.orientation.values, [0.0, math.pi / 2], math.pi) < 1e-6)
    np.testing.assert_allclose(ds.x.values, cx)
    np.testing.assert_array_equal(ds.n_covered.values, [3, 2])
    np.testing.assert_allclose(ds.coverage.values, [3 / 6, 5 / 6])


def test_battery_at_cluster_gabor_differs_where_the_neuron_differs_from_its_cluster():
    # One cluster of three linear neurons: two prefer sf 1/8, one 1/5. The cluster's optimal
    # Gabor takes the majority's sf (1/8), so the battery at it (what schemas.insilico's
    # Cluster<Table> tables run: the cluster's size, sf, contrast and phase at each neuron's own
    # RF and orientation) is the battery at the own Gabor for the first two, while the third sees
    # a grating below its preferred sf. Closed form for a linear Gabor filter: its orientation
    # tuning broadens at a lower stimulus sf, and a large grating off its sf drives it less than a
    # small Gabor (whose broad spectrum reaches the filter's): apparent surround suppression.
    tr = dict(
        x=[20.0, 44.0, 32.0],
        y=[12.0, 22.0, 18.0],
        size=[8.0] * 3,
        sf=[1 / 8, 1 / 8, 1 / 5],
        orientation=[0.0, math.pi / 3, 2 * math.pi / 3],
        phase=[0.0] * 3,
    )
    grid = search.GaborGrid(
        offsets=(0.0,),
        sizes=(8.0, 12.0),
        sfs=(1 / 10, 1 / 8, 1 / 5),
        contrasts=(2.0,),
        orientations=tuple(np.arange(8) * math.pi / 8),
        phases=tuple(np.arange(4) * math.pi / 2),
    )
    model = GaborFilterModel(**tr)
    cluster = search.cluster_optimal_gabor(model, np.zeros(3, int), grid)
    own = search.optimal_gabor(model, grid)
    np.testing.assert_allclose(own.sf.values, tr["sf"])
    np.testing.assert_allclose(cluster.sf.values, 1 / 8)

    def battery(ds):
        p = search.params_of(ds)
        sc = experiments.size_contrast_tuning(model, p, (2.0, 4.0, 8.0, 16.0, 24.0), (1.0, 2.0))
        return dict(
            ori=indices.orientation_index(experiments.orientation_tuning(model, p, 16)).values,
            f1f0=indices.phase_f1f0(experiments.phase_tuning(model, p, 16)).values,
            supp=indices.suppression_index(sc).values,
        )

    at_own, at_cluster = battery(own), battery(cluster)
    for name in at_own:  # the majority's own Gabor is the cluster's: identical indices
        np.testing.assert_allclose(at_cluster[name][:2], at_own[name][:2], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(at_own["supp"], 0.0, atol=1e-6)  # linear: no suppression at own
    assert at_cluster["supp"][2] > 0.05  # spurious suppression off the preferred sf
    assert at_cluster["ori"][2] < at_own["ori"][2] - 0.03  # broader at the lower sf
    # a half-wave rectified linear cell: 2|F1|/F0 = pi/2 whatever the drive's amplitude
    np.testing.assert_allclose(at_cluster["f1f0"], math.pi / 2, rtol=0.03)
