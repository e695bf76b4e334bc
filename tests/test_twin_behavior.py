"""Responses and behaviour as labs record them (issue 20.3): per-neuron response
standardisation, behaviour channels and the pupil shifter, their import checks, and the
simulator's behaviour effects, which a twin recovers."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch
from scipy import ndimage

from insilico.twin_adapter import TwinResponseModel
from twin.core import RotationEquivariantCore
from twin.data import ScanData
from twin.metrics import correlation, evaluate, feve
from twin.model import Twin
from twin.training import TrainConfig, build_model, fit
from v1twin import cli
from v1twin.recording import RecordingError
from v1twin.sensorium import read_sensorium

pytestmark = pytest.mark.usefixtures("one_torch_thread")

H, W = 16, 16
ARCH = {
    "core": {"features": (4, 4), "orientations": 4, "kernel_sizes": (5, 3)},
    "readout": {"type": "gaussian", "feature_l1": 1e-3},
}
SMALL = {**ARCH, "core": {"features": (2,), "orientations": 4, "kernel_sizes": (3,)}}
# float32: two trainings on equal data must agree to rounding, which bfloat16 steps amplify
CONFIG = TrainConfig(
    lr=1e-2, batch_size=32, max_epochs=2, patience=3, seed=3, device="cpu", precision="float32"
)


def scan_with_behavior(name="a", n_neurons=6, seed=1, behavior=True, scale=1.0):
    """Oriented linear neurons on smoothed noise images (raw units around 128), Poisson counts
    times ``scale``; with ``behavior``, per-trial behaviour (T, 3) (the third scales the drive)
    and pupil centre (T, 2)."""
    rng = np.random.default_rng(seed)
    n_train, n_val, n_test, repeats = 240, 60, 10, 4
    n_images = n_train + n_val + n_test
    images = ndimage.gaussian_filter(rng.normal(size=(n_images, H, W)), (0, 1, 1))
    images = (128 + 40 * images / images.std()).astype(np.float32)
    yy, xx = np.mgrid[0:H, 0:W]
    cx, cy = rng.uniform(5, 10, n_neurons), rng.uniform(5, 10, n_neurons)
    th = rng.uniform(0, np.pi, n_neurons)
    u = (xx - cx[:, None, None]) * np.cos(th)[:, None, None]
    u = u + (yy - cy[:, None, None]) * np.sin(th)[:, None, None]
    envelope = np.exp(-((xx - cx[:, None, None]) ** 2 + (yy - cy[:, None, None]) ** 2) / 8)
    filters = (envelope * np.cos(1.2 * u)).reshape(n_neurons, -1)
    ids = np.concatenate(
        [np.arange(n_train + n_val), np.repeat(np.arange(n_train + n_val, n_images), repeats)]
    )
    drive = ((images[ids].reshape(len(ids), -1) - 128) / 40) @ filters.T
    beh = np.stack(
        [rng.normal(5, 1, len(ids)), rng.normal(0, 1, len(ids)), rng.normal(size=len(ids))], 1
    )
    gain = np.exp(0.5 * beh[:, 2:]) if behavior else 1.0
    rates = 0.2 + 2.0 * gain * np.maximum(drive / drive.std(0), 0)
    tiers = np.array(["train"] * n_train + ["validation"] * n_val + ["test"] * n_test * repeats)
    return ScanData(
        name,
        images[ids, None],
        (scale * rng.poisson(rates)).astype(np.float32),
        tiers,
        ids,
        beh.astype(np.float32) if behavior else None,
        rng.normal([50, 40], 3, (len(ids), 2)).astype(np.float32) if behavior else None,
    )


# ---- response standardisation -----------------------------------------------------------------
def test_response_scale_is_the_train_sd_with_neuronormalizers_floor():
    """Train-tier s.d. per neuron; below 1 % of the mean s.d. (a silent neuron) it is that floor,
    as neuralpredictors' NeuroNormalizer; build_model stores it as the readout's buffer."""
    rng = np.random.default_rng(0)
    train = np.stack([rng.normal(10, 2, 200), rng.normal(3, 0.5, 200), np.full(200, 1.0)], 1)
    train = (train - train.mean(0)) / np.maximum(train.std(0), 1e-9) * [2.0, 0.5, 0.0] + [10, 3, 1]
    other = rng.normal(0, 50, (20, 3))  # validation trials: not used
    responses = np.concatenate([train, other]).astype(np.float32)
    tiers = np.array(["train"] * 200 + ["validation"] * 20)
    images = rng.uniform(0, 255, (220, 1, 8, 8)).astype(np.float32)
    scan = ScanData("s", images, responses, tiers, np.arange(220))
    expected = [2.0, 0.5, 0.01 * (2.0 + 0.5 + 0.0) / 3]
    np.testing.assert_allclose(scan.response_scale(), expected, rtol=1e-5)
    np.testing.assert_allclose(build_model(SMALL, [scan]).response_scale("s"), expected, rtol=1e-5)
    plain = build_model({**SMALL, "standardize_responses": False}, [scan])
    np.testing.assert_array_equal(plain.response_scale("s"), np.ones(3))


def test_scaled_responses_scale_predictions_and_leave_the_metrics():
    """Recorded responses x 10 give the same standardized responses, so the same training: the
    twin's predictions come back x 10 (recorded units), correlation and FEVE are unchanged, and
    FEVE is that of the predictions against the recorded responses."""
    scans = [scan_with_behavior(behavior=False), scan_with_behavior(behavior=False, scale=10.0)]
    twins = []
    for scan in scans:
        twin = build_model(ARCH, [scan], seed=0)
        fit(twin, [scan], CONFIG, progress=False)
        twins.append(twin)
    x = twins[0].standardize(scans[0].images[:50])
    np.testing.assert_allclose(
        twins[1].predict(x, "a"), 10 * twins[0].predict(x, "a"), rtol=2e-3, atol=1e-4
    )
    small, big = evaluate(twins[0], scans[0]), evaluate(twins[1], scans[1])
    for key in ("test_correlation", "feve", "oracle_correlation"):
        np.testing.assert_allclose(big[key], small[key], rtol=1e-3, atol=1e-3)
    test = scans[1].select("test")
    direct = feve(
        twins[1].predict(twins[1].standardize(test.images), "a"), test.responses, test.image_ids
    )
    np.testing.assert_allclose(big["feve"], direct, rtol=1e-6)
    train = scans[1].select("train")
    mean_pred = twins[1].predict(twins[1].standardize(train.images), "a").mean()
    assert 0.7 < mean_pred / train.responses.mean() < 1.3  # recorded units, not standardized


# ---- behaviour as inputs ------------------------------------------------------------------------
@pytest.mark.parametrize("padding", ["gray", "zero"])
def test_core_with_behaviour_offset_is_rotation_equivariant(padding):
    """A per-trial, per-feature offset on the first layer (behaviour channels) keeps the core's
    exact equivariance: out(rot x, b)[:, f, o] == rot(out(x, b))[:, f, (o - k) % O]."""
    torch.manual_seed(0)
    orientations = 8
    core = RotationEquivariantCore((3, 2), orientations, (5, 3), padding=padding).eval()
    x, offset = torch.randn(2, 1, 15, 15), torch.randn(2, 3)
    with torch.no_grad():
        out = core(x, offset)
        out_rot = core(torch.rot90(x, 1, dims=(-2, -1)), offset)
        assert not torch.allclose(out, core(x), atol=1e-3)  # the offset acts
    b, _, h, w = out.shape
    k = orientations // 4
    expected = torch.roll(
        torch.rot90(out, 1, dims=(-2, -1)).view(b, -1, orientations, h, w), k, dims=2
    )
    torch.testing.assert_close(
        out_rot.view(b, -1, orientations, h, w), expected, atol=1e-5, rtol=1e-4
    )


@pytest.fixture(scope="module")
def behaving_twin():
    """A twin of one scan with behaviour and pupil centre and one without, its behaviour weights
    and shifter set at random (as if trained)."""
    scans = [scan_with_behavior("a"), scan_with_behavior("b", seed=2, behavior=False)]
    twin = build_model(ARCH, scans, seed=0).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        twin.behavior_bias.weight.normal_()
        for p in twin.behavior["a"].shifter.parameters():
            p.normal_()
    return twin, scans


def test_twin_takes_behaviour_only_where_recorded(behaving_twin):
    twin, scans = behaving_twin
    assert twin.config["behavior"] == {"a": [3, True]}
    assert twin.trial_inputs(scans[1]) == {}
    assert set(twin.trial_inputs(scans[0])) == {"behavior", "pupil_center"}
    x = torch.from_numpy(twin.standardize(scans[0].images[:4]))
    with pytest.raises(ValueError, match="scan 'b': this twin takes no behavior"):
        twin(x, "b", behavior=torch.zeros(4, 3))
    with pytest.raises(ValueError, match="scan 'b': this twin takes no pupil_center"):
        twin(x, "b", pupil_center=torch.zeros(4, 2))
    # a plain scan's twin (no behaviour anywhere) keeps its config as before
    plain = build_model(ARCH, [scans[1]], seed=0)
    assert "behavior" not in plain.config and plain.behavior_bias is None
    off = build_model({**ARCH, "behavior": False}, scans, seed=0)
    assert "behavior" not in off.config and off.trial_inputs(scans[0]) == {}


def test_in_silico_runs_at_the_training_mean_behaviour(behaving_twin):
    """No behaviour (in silico) = the scan's train-tier mean behaviour and pupil centre: no
    offset and no shift; other behaviour changes the rates; the ResponseModel, the fast path
    and predict give recorded units."""
    twin, scans = behaving_twin
    scan = scans[0]
    train = scan.select("train")
    x = torch.from_numpy(twin.standardize(scan.images[:5]))
    mean_b = torch.from_numpy(train.behavior.mean(0, keepdims=True)).repeat(5, 1)
    mean_p = torch.from_numpy(train.pupil_center.mean(0, keepdims=True)).repeat(5, 1)
    with torch.no_grad():
        plain = twin(x, "a")
        torch.testing.assert_close(twin(x, "a", mean_b, mean_p), plain, atol=1e-5, rtol=1e-5)
        moved = twin(x, "a", mean_b + torch.from_numpy(train.behavior.std(0)), mean_p)
        shifted = twin(x, "a", mean_b, mean_p + 3.0)
        scale = twin.response_scale("a")
        model = TwinResponseModel(twin, "a")
        torch.testing.assert_close(model(x), plain * scale)
        torch.testing.assert_close(
            model.respond_own(x, torch.arange(5) % 6),
            (plain * scale)[torch.arange(5), torch.arange(5) % 6],
        )
    assert (moved - plain).abs().max() > 1e-3 and (shifted - plain).abs().max() > 1e-3
    np.testing.assert_allclose(twin.predict(x, "a"), (plain * scale).numpy(), rtol=1e-5)


def test_saved_twin_round_trips_and_old_twins_load(behaving_twin):
    twin, scans = behaving_twin
    scan = scans[0].select("test")
    x = twin.standardize(scan.images)
    inputs = twin.trial_inputs(scan)
    rebuilt = Twin.from_config(twin.config)
    rebuilt.load_state_dict(twin.state_dict())
    np.testing.assert_array_equal(rebuilt.predict(x, "a", **inputs), twin.predict(x, "a", **inputs))
    # stored before standardisation: no response_scale buffers -> recorded units = twin units
    plain = build_model(ARCH, [scans[1]], seed=0)
    old = {k: v for k, v in plain.state_dict().items() if not k.endswith("response_scale")}
    again = Twin.from_config(plain.config)
    again.load_state_dict(old)
    np.testing.assert_array_equal(again.response_scale("b"), np.ones(6))


def test_scandata_refuses_bad_behaviour():
    good = scan_with_behavior()
    for field, bad in (
        ("behavior", good.behavior[:-1]),
        ("pupil_center", good.pupil_center[:, :1]),
        ("behavior", np.where(np.arange(3) == 1, np.nan, good.behavior)),
    ):
        with pytest.raises(ValueError, match=f"ScanData.{field} of scan 'a'"):
            ScanData(**{**good.__dict__, field: bad})


def test_training_with_behaviour_beats_the_mean_behaviour():
    """The drive of scan_with_behavior's neurons is scaled by exp(0.5 behaviour[2]): a twin
    trained with behaviour predicts held-out trials better with their behaviour than at the
    mean, and weighs that channel most."""
    scan = scan_with_behavior(n_neurons=8)
    twin = build_model(ARCH, [scan], seed=0)
    fit(
        twin,
        [scan],
        TrainConfig(lr=1e-2, batch_size=32, max_epochs=6, seed=3, device="cpu"),
        progress=False,
    )
    val = scan.select("validation")
    x = twin.standardize(val.images)
    with_b = twin.predict(x, "a", behavior=val.behavior)
    at_mean = twin.predict(x, "a")
    assert (
        correlation(with_b, val.responses).mean()
        > correlation(at_mean, val.responses).mean() + 0.03
    )
    weight = twin.behavior_bias.weight.detach().abs().sum(0).numpy()
    assert weight.argmax() == 2


# ---- import -------------------------------------------------------------------------------------
def _counts(recording):
    scan = recording.Scan
    return tuple(len(t()) for t in (scan, scan.Neuron, scan.Image, scan.Trial))


def _behaviour_of_length(n):
    def break_it(folder):
        for path in sorted((folder / "data/behavior").glob("*.npy")):
            np.save(path, np.zeros(n, np.float32))

    return break_it


def _nan_in(key, trial):
    def break_it(folder):
        values = np.load(folder / f"data/{key}/{trial}.npy")
        values[-1] = np.nan
        np.save(folder / f"data/{key}/{trial}.npy", values)

    return break_it


BAD_BEHAVIOUR = [
    ("4 behaviour values", _behaviour_of_length(4), "data/behavior/0.npy: behavior must be (3,)"),
    ("NaN behaviour", _nan_in("behavior", 7), "data/behavior/7.npy: behavior of trial 7"),
    ("inf pupil centre", _nan_in("pupil_center", 3), "data/pupil_center/3.npy: pupil_center"),
]


@pytest.mark.parametrize(
    "name, break_it, message", BAD_BEHAVIOUR, ids=[c[0] for c in BAD_BEHAVIOUR]
)
def test_bad_behaviour_is_refused_naming_the_file(
    name, break_it, message, recording_tables, scan_folder, capsys
):
    folder, _ = scan_folder
    before = _counts(recording_tables)
    break_it(folder)
    with pytest.raises(RecordingError, match=re.escape(message)):
        read_sensorium(folder, progress=False)
    assert cli.main(["import", "sensorium", "-q", str(folder)]) == 2
    assert message in capsys.readouterr().err
    assert _counts(recording_tables) == before


def test_recording_checks_behaviour_of_any_reader(scan_folder):
    """Readers other than Sensorium's (netCDF) go through Recording.validate: same rule, named
    by the file and variable."""
    rec = read_sensorium(scan_folder[0], progress=False)
    rec.names["behavior"] = "lab.nc:behavior"
    rec.behavior = rec.behavior[:, :2]
    with pytest.raises(RecordingError, match=re.escape("lab.nc:behavior: behavior must be (3,)")):
        rec.validate()


def test_scan_without_behaviour_imports_and_trains(recording_tables, scan_folder, tmp_path, db):
    folder, arrays = scan_folder
    plain = shutil.copytree(folder, tmp_path / "static44444-1-1-Plain")
    shutil.rmtree(plain / "data/behavior")
    shutil.rmtree(plain / "data/pupil_center")
    assert cli.main(["import", "sensorium", "-q", str(folder), str(plain)]) == 0
    with_b, without = (recording_tables.load_scan(k) for k in ("11111-2-3", "44444-1-1"))
    np.testing.assert_allclose(with_b["behavior"], arrays["behavior"])
    np.testing.assert_allclose(with_b["pupil_center"], arrays["pupil_center"])
    assert without["behavior"] is None and without["pupil_center"] is None
    scans = db["model"].load_scans(db["model"].Dataset.add(["11111-2-3", "44444-1-1"]), (9, 16))
    twin = build_model(SMALL, scans)
    assert twin.config["behavior"] == {"11111-2-3": [3, True]}
    fit(twin, scans, TrainConfig(max_epochs=1, batch_size=16, device="cpu"), progress=False)
    for scan in scans:
        assert np.isfinite(evaluate(twin, scan)["test_correlation"]).all()


def test_default_config_keeps_the_model_hash(db):
    """[model] standardize_responses and behavior: true by default, stored only when false, so
    every existing model_hash stays as it was."""
    from schemas.model import ModelConfig
    from v1twin import config

    for key in ("standardize_responses", "behavior"):
        assert config.defaults("cpu")["model"][key] is True
    plain = ModelConfig.add("cpu")
    assert ModelConfig.add("cpu", standardize_responses=True, behavior=True) == plain
    stored = (ModelConfig & plain).fetch1("config")
    assert "standardize_responses" not in stored and "behavior" not in stored
    off = ModelConfig.add("cpu", standardize_responses=False, behavior=False)
    assert off != plain
    stored = (ModelConfig & off).fetch1("config")
    assert stored["standardize_responses"] is False and stored["behavior"] is False
    with pytest.raises(ValueError, match="behavior must be true or false"):
        ModelConfig.add("cpu", behavior="yes")


# ---- simulator ----------------------------------------------------------------------------------
def test_simulated_running_scales_the_drive():
    """simulate_scans(behavior=True): same images and tiers as without; the log of the drive's
    change per trial, averaged over neurons, rises RUNNING_GAIN per s.d. of running speed (the
    eye shifts add noise, not slope)."""
    from simulator import simulate_scans
    from simulator.virtual_v1 import RUNNING_GAIN

    kw = dict(n_scans=1, n_neurons=20, n_train=200, n_validation=20, n_test_images=5, seed=1)
    moving, still = (
        simulate_scans(behavior=True, n_repeats=2, **kw)[0],
        simulate_scans(n_repeats=2, **kw)[0],
    )
    np.testing.assert_array_equal(moving.images, still.images)
    np.testing.assert_array_equal(moving.tiers, still.tiers)
    assert still.behavior is None and still.pupil_center is None
    assert moving.behavior.shape == (len(moving.tiers), 3)
    assert moving.pupil_center.shape == (len(moving.tiers), 2)
    base = moving.model.base.numpy()
    log_gain = np.log((moving.rates - base) / (still.rates - base)).mean(1)
    run = moving.behavior[:, 2]
    slope = np.polyfit((run - run.mean()) / run.std(), log_gain, 1)[0]
    assert abs(slope - RUNNING_GAIN) < 0.08


@pytest.mark.slow
def test_twin_learns_the_simulated_behaviour(tmp_path):
    """On the virtual V1 with behaviour, the cpu preset's twin predicts held-out trials better
    with their behaviour than at the mean, and its shifter moves the RFs the simulator's way:
    +EYE_SHIFT px along the axis of a +1 s.d. pupil movement."""
    from simulator import simulate_scans
    from simulator.virtual_v1 import EYE_SHIFT, PUPIL_REST, PUPIL_SD
    from twin.presets import get_preset

    sim = simulate_scans(
        n_scans=1,
        n_neurons=60,
        n_train=1500,
        n_validation=300,
        n_test_images=40,
        n_repeats=5,
        seed=0,
        behavior=True,
    )[0]
    scan = ScanData(
        sim.name,
        sim.images,
        sim.responses,
        sim.tiers,
        sim.image_ids,
        sim.behavior,
        sim.pupil_center,
    )
    preset = get_preset("cpu")
    arch = {
        "core": preset.core,
        "readout": preset.readout,
        "downsample": preset.downsample,
        "output": preset.output,
    }
    twin = build_model(arch, [scan], seed=0)
    config = preset.train
    config.max_epochs, config.device = 12, "cpu"  # 800 trials, 8 epochs: no shift learned yet
    fit(twin, [scan], config, progress=False)
    val = scan.select("validation")
    x = twin.standardize(val.images)
    with_b = correlation(twin.predict(x, scan.name, **twin.trial_inputs(val)), val.responses).mean()
    at_mean = correlation(twin.predict(x, scan.name), val.responses).mean()
    assert with_b > at_mean + 0.05
    px = twin.rf_shift(scan.name, np.asarray(PUPIL_REST) + PUPIL_SD * np.eye(2))
    np.testing.assert_allclose(np.diag(px), EYE_SHIFT, atol=0.6)
    assert np.abs(px[[0, 1], [1, 0]]).max() < 0.6


@pytest.mark.slow
def test_cli_simulate_with_behaviour_writes_an_importable_folder(tmp_path):
    """`v1twin simulate --behavior` (1,520 trials: its validation and test tiers are fixed)."""
    args = ["simulate", "--out", str(tmp_path), "--neurons", "4", "--scans", "1", "--trials", "20"]
    assert cli.main([*args, "--behavior"]) == 0
    rec = read_sensorium(next(tmp_path.glob("static*")), progress=False)
    assert rec.behavior.shape == (len(rec.tiers), 3)
    assert rec.pupil_center.shape == (len(rec.tiers), 2)
    assert np.isfinite(rec.behavior).all() and (rec.behavior[:, 2] >= 0).all()  # running speed
