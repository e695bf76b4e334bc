"""The twin's equivariant fast path (insilico.twin_adapter) against the direct reference.

A small untrained Twin (the "cpu" preset core at full resolution: 3 layers, kernels 9, 5, 5, the
last dilated 3x -> receptive-field radius 12 px, hidden layers' radius 6 px; gray padding;
Gaussian readout) with RF positions set by hand. The last test adds surround pooling.

Tolerances (stated; see insilico/twin_adapter.py for why):

* RF - centre an integer vector (RFs on half-integer pixels, centre (31.5, 17.5)) and either the
  core's receptive field inside the canvas (any stimulus) or, by gray padding, a compact stimulus
  whose support widened by the hidden layers' radius stays inside it: fast == direct to float32
  precision, |diff| <= 1e-4 + 1e-4 * |response| (measured ~5e-6 on responses up to ~17).
* Sub-pixel RFs: the two paths are two bilinear interpolations of the same feature maps (at
  sub-pixel phase frac(mu) vs 0.5), so they differ by a second-order interpolation error. For
  this untrained core (white-noise Hermite filters: the roughest feature maps a twin can have) we
  state |diff| <= 0.15 x the neuron's largest response over the grid (measured up to 0.073);
  a trained, smoother core does better (benchmarks/fast_path.py prints it).
"""

import math

import numpy as np
import pytest
import torch

from insilico import search, twin_adapter
from insilico.model import ResponseModel, canvas_center
from insilico.twin_adapter import TwinResponseModel, merge, optimal_gabor
from twin.data import ScanData
from twin.presets import get_preset
from twin.training import build_model

H, W = 36, 64
EXACT_ATOL, EXACT_RTOL = 1e-4, 1e-4
SUBPIXEL_TOL = 0.15  # fraction of the neuron's max response over the grid

# 6 interior neurons on half-integer positions (two right at the core's reach of 12 px), 2 border
# ones (within the hidden layers' radius of 6 px)
POS_HALF = np.array(
    [
        [12.5, 12.5],
        [50.5, 22.5],
        [20.5, 14.5],
        [40.5, 20.5],
        [31.5, 17.5],
        [25.5, 21.5],
        [2.5, 17.5],
        [40.5, 33.5],
    ]
)
BORDER = np.array([False] * 6 + [True, True])
GRID = search.GaborGrid(
    offsets=(0.0,),
    sizes=(6.0, 12.0),
    sfs=(1 / 10, 1 / 6),
    contrasts=(4.0,),
    orientations=tuple(np.arange(4) * math.pi / 4),
    phases=(0.0, math.pi),
)


def _set_positions(twin, pos):
    r = twin.readouts["s"]
    with torch.no_grad():
        r.mu.copy_(torch.tensor(2 * pos / np.array([W - 1, H - 1]) - 1, dtype=torch.float32))


@pytest.fixture(scope="module")
def twin():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    t, n = 40, len(POS_HALF)
    scan = ScanData(
        "s",
        rng.uniform(0, 255, (t, 1, H, W)),
        rng.poisson(2.0, (t, n)),
        np.array(["train"] * 30 + ["validation"] * 10),
        np.arange(t),
    )
    cpu = get_preset("cpu")  # its core at full resolution: exactness is about the pixel grid
    tw = build_model(
        {"core": cpu.core, "readout": cpu.readout, "downsample": 1}, [scan], seed=0
    ).eval()
    _set_positions(tw, POS_HALF)
    return tw


@pytest.fixture(scope="module")
def half(twin):
    """Direct and fast searches with RFs on half-integer pixels."""
    _set_positions(twin, POS_HALF)
    m = TwinResponseModel(twin, "s")
    with torch.no_grad():
        dd, rd = search.optimal_gabor(m, GRID, return_responses=True)
        df, rf = search.optimal_gabor(
            m, GRID, respond=m.fast_respond(), center=m.center, return_responses=True
        )
        merged = optimal_gabor(m, GRID, border_refine=None)
    return m, dd, rd, df, rf, merged


def test_model_contract_and_center(twin):
    _set_positions(twin, POS_HALF)
    m = TwinResponseModel(twin, "s")
    assert isinstance(m, ResponseModel)
    np.testing.assert_allclose(m.rf_positions, POS_HALF, atol=1e-4)
    # the centre the readout assumes is insilico's canvas centre: one definition
    assert m.center == ((W - 1) / 2, (H - 1) / 2) == m.fast_respond().center
    assert m.center == canvas_center(m.image_shape) and m.image_shape == (H, W)
    assert (twin.reach, twin.hidden_reach) == (12, 6)
    assert m.preferred_orientations is None
    m.preferred_orientations = np.linspace(0, 3, len(POS_HALF))
    with pytest.raises(ValueError):
        m.preferred_orientations = np.zeros(3)
    x = torch.randn(5, 1, H, W)
    with torch.no_grad():
        full = m(x)
        idx = torch.tensor([0, 3, 7, 7, 2])
        np.testing.assert_allclose(
            m.respond_own(x, idx), full.gather(1, idx[:, None])[:, 0], rtol=1e-5, atol=1e-5
        )
        sub = m.subset([7, 2])
        np.testing.assert_allclose(sub(x), full[:, [7, 2]], rtol=1e-6)
        np.testing.assert_allclose(
            sub.respond_own(x, torch.tensor([1, 0, 1, 0, 0])),
            full[:, [2, 7, 2, 7, 7]].diagonal(),
            rtol=1e-5,
            atol=1e-5,
        )
    assert twin.training is False


def test_fast_equals_direct_on_half_integer_rfs(half):
    m, dd, rd, df, rf, _ = half
    assert rd.shape == rf.shape == (len(GRID), len(POS_HALF))
    inner = ~BORDER
    diff = (rd[:, inner] - rf[:, inner]).abs()
    assert float(diff.max()) <= EXACT_ATOL + EXACT_RTOL * float(rd[:, inner].abs().max())
    # (b) the same optimal Gabor for interior neurons
    for k in search.GABOR_KEYS:
        np.testing.assert_array_equal(dd[k].values[inner], df[k].values[inner], err_msg=k)
    np.testing.assert_allclose(dd.response.values[inner], df.response.values[inner], rtol=1e-4)


def test_fast_path_on_arbitrary_centred_images(twin):
    """Any centred image (noise), integer shifts: fast == full model on the image shifted to the
    RF."""
    _set_positions(twin, POS_HALF)
    m = TwinResponseModel(twin, "s")
    x = torch.randn(3, 1, H, W)
    with torch.no_grad():
        fast = m.fast_respond()(x)
        direct = search.direct_respond(m, center=m.center)(x)
        hybrid = m.hybrid_respond()(x)
    inner = ~BORDER
    assert float(
        (fast[:, inner] - direct[:, inner]).abs().max()
    ) <= EXACT_ATOL + EXACT_RTOL * float(direct.abs().max())
    # the hybrid respond: fast inside, direct at the border
    np.testing.assert_allclose(hybrid[:, inner], fast[:, inner], rtol=1e-6)
    np.testing.assert_allclose(hybrid[:, BORDER], direct[:, BORDER], rtol=1e-4, atol=1e-5)


def test_border_neurons_flagged_and_get_direct_result(half):
    m, dd, rd, df, rf, merged = half
    np.testing.assert_array_equal(m.border_mask(), BORDER)
    assert m.border_mask(margin=0).sum() == 0
    assert m.border_mask(margin=13).sum() > BORDER.sum()
    # zero padding: the fast path is not the direct result at the border
    assert float((rd[:, BORDER] - rf[:, BORDER]).abs().max()) > 1e-2
    np.testing.assert_array_equal(merged.border.values, BORDER)
    for k in search.GABOR_KEYS + ("response",):
        np.testing.assert_allclose(
            merged[k].values[BORDER], dd[k].values[BORDER], rtol=1e-5, err_msg=k
        )
        np.testing.assert_allclose(
            merged[k].values[~BORDER], df[k].values[~BORDER], rtol=1e-6, err_msg=k
        )
    # merge of tables: all-N direct or border-only direct
    t = merge(rf, rd, BORDER)
    np.testing.assert_array_equal(t[:, BORDER], rd[:, BORDER])
    np.testing.assert_array_equal(merge(rf, rd[:, BORDER], BORDER), t)


def test_border_neurons_ranked_fast_and_rescored_by_the_direct_path(half):
    """Border neurons: the fast path ranks the grid, their ``border_refine`` best are re-scored by
    the direct path. On this twin the direct optimum of the two border neurons ranks 12th and 6th
    of 32 by the fast path, so 16 candidates find it (the same Gabor and response as the whole
    grid direct: tolerance 1e-5 relative), while 1 candidate (the fast path's choice, re-scored)
    loses > 5 % on one of them; every reported border response is a direct one."""
    m, dd, rd, df, rf, merged = half
    assert twin_adapter.BORDER_REFINE == 16
    with torch.no_grad():
        new = optimal_gabor(m, GRID)
        one = optimal_gabor(m, GRID, border_refine=1, refine=1)
    assert new.attrs["border_refine"] == 16 and merged.attrs["border_refine"] == -1
    for k in search.GABOR_KEYS + ("response",):
        np.testing.assert_allclose(new[k], merged[k], rtol=1e-5, err_msg=k)
    fast_choice = rf.argmax(0)[BORDER]
    np.testing.assert_allclose(
        one.response.values[BORDER], rd[:, BORDER].gather(0, fast_choice[None])[0], rtol=1e-5
    )
    assert (one.response.values[BORDER] < 0.95 * dd.response.values[BORDER]).any()
    assert not np.allclose(one.response.values[BORDER], df.response.values[BORDER], rtol=1e-3)


def test_refine_counts_per_neuron(half):
    """``refine`` as one count per neuron equals the scalar where the counts agree, and 0 keeps
    the fast path's own choice and response."""
    m = half[0]
    fast = dict(respond=m.fast_respond(), center=m.center)
    n = len(POS_HALF)
    with torch.no_grad():
        three = search.optimal_gabor(m, GRID, refine=3, **fast)
        mixed = search.optimal_gabor(m, GRID, refine=np.where(BORDER, 3, 0), **fast)
    np.testing.assert_allclose(mixed.response[BORDER], three.response[BORDER], rtol=1e-6)
    np.testing.assert_allclose(mixed.response[~BORDER], half[3].response[~BORDER], rtol=1e-6)
    for bad in (np.zeros(n - 1, int), -1, 1.5):
        with pytest.raises(ValueError, match="refine"):
            search.optimal_gabor(m, GRID, refine=bad, **fast)


def test_gray_padding_keeps_fast_path_exact_inside_the_core_reach(twin):
    """A compact patch (radius 1 px) on gray, neurons 7.5 px from the edge: inside the core's reach
    (12 px; zero padding shows within 12 - 4 = 8 px, as the image layer's padding is gray anyway)
    but with the patch widened by the hidden layers' 6 px on the canvas. Gray padding: fast ==
    direct; the same weights with zero padding: not."""
    from twin.model import Twin

    pos = np.array(
        [
            [7.5, 7.5],
            [56.5, 17.5],
            [31.5, 27.5],
            [20.5, 7.5],
            [7.5, 27.5],
            [56.5, 7.5],
            [40.5, 27.5],
            [7.5, 17.5],
        ]
    )
    x = torch.zeros(1, 1, H, W)  # a 2 x 2 patch around the centre (31.5, 17.5)
    x[..., 17:19, 31:33] = torch.randn(1, 1, 2, 2, generator=torch.Generator().manual_seed(2))
    diffs = {}
    for padding in ("gray", "zero"):
        config = twin.config
        config["core"]["padding"] = padding
        tw = Twin.from_config(config)
        tw.load_state_dict(twin.state_dict())
        torch.manual_seed(3)  # batch norms as after training: a gray image does not map to 0
        for norm in tw.core.norms:
            norm.running_mean.normal_()
            norm.bias.data.normal_()
        _set_positions(tw.eval(), pos)
        m = TwinResponseModel(tw, "s")
        assert m.border_mask(extent=1).all() == (padding == "zero")  # the rule knows
        with torch.no_grad():
            fast, direct = m.fast_respond()(x), search.direct_respond(m, center=m.center)(x)
        diffs[padding] = float((fast - direct).abs().max()), float(direct.abs().max())
    assert diffs["gray"][0] <= EXACT_ATOL + EXACT_RTOL * diffs["gray"][1]
    assert diffs["zero"][0] > 1e-2 * diffs["zero"][1]


def test_fast_vs_direct_on_subpixel_rfs(twin):
    rng = np.random.default_rng(1)
    pos = np.stack([rng.uniform(12, 51, 8), rng.uniform(12, 23, 8)], 1)
    _set_positions(twin, pos)
    try:
        m = TwinResponseModel(twin, "s")
        assert not m.border_mask().any()
        with torch.no_grad():
            dd, rd = search.optimal_gabor(m, GRID, return_responses=True)
            df, rf = search.optimal_gabor(
                m, GRID, respond=m.fast_respond(), center=m.center, return_responses=True
            )
        scale = rd.max(0).values
        rel = ((rd - rf).abs().max(0).values / scale).numpy()
        assert rel.max() <= SUBPIXEL_TOL, rel
        # (b) the fast path's choice is optimal for the direct path up to the tolerance
        best_f = rf.argmax(0)
        chosen = rd.gather(0, best_f[None])[0]
        assert bool((chosen >= scale * (1 - 2 * SUBPIXEL_TOL)).all())
    finally:
        _set_positions(twin, POS_HALF)


def test_refine_rescoring_by_the_direct_path(twin):
    """``refine=k``: each neuron's k best fast-path stimuli are scored by the direct path. k = 1
    keeps the fast choice and reports its direct response; more candidates never choose worse;
    all of them reproduce the direct search exactly (sub-pixel RFs, where the paths differ)."""
    rng = np.random.default_rng(1)
    _set_positions(twin, np.stack([rng.uniform(12, 51, 8), rng.uniform(12, 23, 8)], 1))
    try:
        m = TwinResponseModel(twin, "s")
        fast = dict(respond=m.fast_respond(), center=m.center)
        with torch.no_grad():
            dd, rd = search.optimal_gabor(m, GRID, return_responses=True)
            one, rf = search.optimal_gabor(m, GRID, refine=1, return_responses=True, **fast)
            three = search.optimal_gabor(m, GRID, refine=3, **fast)
            every = search.optimal_gabor(m, GRID, refine=len(GRID), **fast)
        plain = rf.argmax(0)
        np.testing.assert_allclose(one.response, rd.gather(0, plain[None])[0], rtol=1e-5)
        assert not np.allclose(one.response, rf.max(0).values, rtol=1e-3)  # it is re-scored
        assert (three.response.values >= one.response.values - 1e-5).all()
        for k in search.GABOR_KEYS:
            np.testing.assert_allclose(every[k], dd[k], atol=1e-6, err_msg=k)
        np.testing.assert_allclose(every.response, dd.response, rtol=1e-5)
        assert one.attrs["refine"] == 1 and dd.attrs["refine"] == 0
    finally:
        _set_positions(twin, POS_HALF)


def test_pooled_twin_reports_canvas_pixels_and_stays_equivariant():
    """downsample=2: RF positions and the fast-path centre are canvas pixels; the fast path equals
    the full model on the stimulus moved onto the RF by an even (grid-aligned) shift."""
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    scan = ScanData(
        "s",
        rng.uniform(0, 255, (40, 1, H, W)),
        rng.poisson(2.0, (40, 3)),
        np.array(["train"] * 30 + ["validation"] * 10),
        np.arange(40),
    )
    tw = build_model("cpu", [scan], seed=0).eval()
    assert tw.downsample == 2 and (tw.reach, tw.hidden_reach) == (24, 12)
    shifts = np.array([[-8, 2], [6, -2], [0, 0]])
    grid_h, grid_w = H // 2, W // 2
    grid_pos = (np.array(tw.center) + 0.5) / 2 - 0.5 + shifts / 2
    with torch.no_grad():
        tw.readouts["s"].mu.copy_(
            torch.tensor(2 * grid_pos / np.array([grid_w - 1, grid_h - 1]) - 1, dtype=torch.float32)
        )
    np.testing.assert_allclose(tw.rf_positions("s"), np.array(tw.center) + shifts, atol=1e-4)
    x = torch.zeros(1, 1, H, W)
    x[..., 14:22, 28:36] = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        fast = tw.at_rf(x, "s")[0]
        direct = torch.stack(
            [
                tw(torch.roll(x, (int(dy), int(dx)), (2, 3)), "s")[0, i]
                for i, (dx, dy) in enumerate(shifts)
            ]
        )
    np.testing.assert_allclose(fast, direct, rtol=1e-4, atol=1e-5)
    m = TwinResponseModel(tw, "s")  # respond_own goes through the same pooling as the model
    with torch.no_grad():
        idx = torch.tensor([2, 0, 1])
        np.testing.assert_allclose(
            m.respond_own(x.expand(3, -1, -1, -1), idx), m(x)[0, idx], rtol=1e-5
        )


def test_per_neuron_experiment_equals_hybrid_reference(twin):
    """Fast for all, direct for border neurons on their own stimuli == the hybrid respond."""
    from insilico import experiments
    from insilico.twin_adapter import per_neuron_experiment

    _set_positions(twin, POS_HALF)
    m = TwinResponseModel(twin, "s")
    rng = np.random.default_rng(3)
    params = dict(
        x=POS_HALF[:, 0],
        y=POS_HALF[:, 1],
        size=rng.uniform(4, 10, len(POS_HALF)),
        sf=np.full(len(POS_HALF), 0.1),
        contrast=np.full(len(POS_HALF), 2.0),
        orientation=rng.uniform(0, np.pi, len(POS_HALF)),
        phase=np.zeros(len(POS_HALF)),
    )
    with torch.no_grad():
        split = per_neuron_experiment(experiments.orientation_tuning, m, params, 8)
        hybrid = experiments.orientation_tuning(
            m, params, 8, respond=m.hybrid_respond(), center=m.center
        )
        fast = experiments.orientation_tuning(
            m, params, 8, respond=m.fast_respond(), center=m.center
        )
    np.testing.assert_allclose(split.values, hybrid.values, rtol=1e-4, atol=1e-5)
    assert np.abs(split.values[BORDER] - fast.values[BORDER]).max() > 1e-3  # the border did change


def test_per_neuron_experiment_with_canvas_wide_stimuli_runs_direct(twin):
    """An extent that flags every neuron (size tuning's largest Gabors) gives the direct path."""
    from insilico import experiments
    from insilico.stimuli import gabor_radius
    from insilico.twin_adapter import per_neuron_experiment

    _set_positions(twin, POS_HALF)
    m = TwinResponseModel(twin, "s")
    n = len(POS_HALF)
    params = dict(
        x=POS_HALF[:, 0],
        y=POS_HALF[:, 1],
        size=np.full(n, 8.0),
        sf=np.full(n, 0.1),
        contrast=np.full(n, 2.0),
        orientation=np.linspace(0, np.pi, n, endpoint=False),
        phase=np.zeros(n),
    )
    sizes, contrasts = (4.0, 16.0, 32.0), (1.0, 4.0)
    assert m.border_mask(extent=gabor_radius(max(sizes))).all()
    with torch.no_grad():
        split = per_neuron_experiment(
            experiments.size_contrast_tuning,
            m,
            params,
            sizes,
            contrasts,
            extent=gabor_radius(max(sizes)),
        )
        direct = experiments.size_contrast_tuning(m, params, sizes, contrasts)
        fast = experiments.size_contrast_tuning(
            m, params, sizes, contrasts, respond=m.fast_respond(), center=m.center
        )
    np.testing.assert_allclose(split.values, direct.values, rtol=1e-5, atol=1e-6)
    assert np.abs(fast.values - direct.values).max() > 1e-3  # the canvas edge acts on the fast path


def test_surround_pooling_keeps_the_fast_path_exact_for_compact_stimuli(twin):
    """The same core with surround pooling (sigmas 4 and 8 px, reaching 24 px beyond the hidden
    layers, so from every RF the pooling crosses the canvas edge): the border rule is unchanged
    (the pooling acts on the hidden layer, 0 at gray), and for a compact patch on gray fast ==
    direct for the interior neurons, as without pooling; the pooled features do change the
    responses."""
    from twin.model import Twin

    config = twin.config
    config["core"]["surround_sigmas"] = [4.0, 8.0]
    tw = Twin.from_config(config)
    torch.manual_seed(4)
    tw.core.load_state_dict(twin.core.state_dict(), strict=False)  # readouts: a fresh random init
    for norm in [*tw.core.norms, *tw.core.surround_norms]:  # batch norms as after training
        norm.running_mean.normal_()
        norm.bias.data.normal_()
    _set_positions(tw.eval(), POS_HALF)
    m = TwinResponseModel(tw, "s")
    assert tw.core.out_features == 4 + 2 * 4 and tw.reach == 6 + 24 and tw.hidden_reach == 6
    np.testing.assert_array_equal(m.border_mask(extent=1), BORDER)
    x = torch.zeros(1, 1, H, W)  # a 2 x 2 patch around the centre (31.5, 17.5)
    x[..., 17:19, 31:33] = torch.randn(1, 1, 2, 2, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        fast, direct = m.fast_respond()(x), search.direct_respond(m, center=m.center)(x)
        inner = ~BORDER
        diff = float((fast[:, inner] - direct[:, inner]).abs().max())
        assert diff <= EXACT_ATOL + EXACT_RTOL * float(direct[:, inner].abs().max())
        tw.readouts["s"].features[:, 4 * 8 :] = 0  # the surround features' weights
        local_only = search.direct_respond(m, center=m.center)(x)
    change = float((local_only[:, inner] - direct[:, inner]).abs().max())
    assert change > 1e-2 * float(direct[:, inner].abs().max())


def test_search_keeps_only_each_neurons_best_stimuli_with_identical_results(twin):
    """The centred search streams the chunks of stimuli into each neuron's k best (memory
    (k + chunk) x N, not B x N): the same Gabors as from the whole table, with and without the
    direct re-scoring."""
    _set_positions(twin, POS_HALF)
    m = TwinResponseModel(twin, "s")
    angles = tuple(np.arange(8) * np.pi / 8)
    grid = search.GaborGrid(
        offsets=(0.0,),
        sizes=(4.0, 6.0, 8.0),
        sfs=(0.1, 0.15, 0.2),
        contrasts=(1.0,),
        orientations=angles,
        phases=tuple(2 * a for a in angles),
    )
    fast = dict(respond=m.fast_respond(), center=m.center)
    with torch.no_grad():
        for refine in (0, 3):
            streamed = search.optimal_gabor(m, grid, refine=refine, **fast)
            whole, table = search.optimal_gabor(
                m, grid, refine=refine, return_responses=True, **fast
            )
            assert table.shape == (576, len(POS_HALF))  # three chunks of 256 stimuli streamed
            assert streamed.attrs["refine"] == refine
            for name in streamed.data_vars:
                np.testing.assert_array_equal(streamed[name].values, whole[name].values)
