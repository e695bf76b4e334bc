"""ScanData validation, model building, fitting, reproducibility and config round trips."""

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from twin.data import ScanData
from twin.metrics import evaluate
from twin.model import Twin
from twin.presets import PRESETS, get_preset
from twin.training import TrainConfig, build_model, fit

H, W = 16, 16
ARCH = {
    "core": {"features": (4, 4), "orientations": 4, "kernel_sizes": (5, 3)},
    "readout": {"type": "gaussian", "feature_l1": 1e-3},
}


def synthetic_scan(name, n_neurons, seed, n_train=480, n_val=120, n_test=20, repeats=4):
    """Neurons = rectified oriented linear filters at random positions + Poisson noise.

    Images are smoothed noise in raw units around 128 (like 0-255 stimuli).
    """
    rng = np.random.default_rng(seed)
    n_images = n_train + n_val + n_test
    images = ndimage.gaussian_filter(rng.normal(size=(n_images, H, W)), (0, 1, 1))
    images = (128 + 40 * images / images.std()).astype(np.float32)
    yy, xx = np.mgrid[0:H, 0:W]
    filters = []
    for _ in range(n_neurons):
        cx, cy, theta = rng.uniform(5, 10), rng.uniform(5, 10), rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
        filters.append(np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 8) * np.cos(1.2 * u))
    filters = np.stack(filters).reshape(n_neurons, -1)
    drive = ((images.reshape(n_images, -1) - 128) / 40) @ filters.T
    rates = 0.2 + 2.0 * np.maximum(drive / drive.std(0), 0)
    ids = np.concatenate(
        [np.arange(n_train + n_val), np.repeat(np.arange(n_train + n_val, n_images), repeats)]
    )
    tiers = np.array(["train"] * n_train + ["validation"] * n_val + ["test"] * n_test * repeats)
    return ScanData(name, images[ids, None], rng.poisson(rates[ids]).astype(np.float32), tiers, ids)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scans():
    return [synthetic_scan("a", 12, seed=1), synthetic_scan("b", 8, seed=2)]


CONFIG = TrainConfig(lr=1e-2, batch_size=32, max_epochs=8, patience=3, lr_decay_steps=1, seed=3)


def test_scandata_validation_names_the_field():
    ok = dict(
        name="s",
        images=np.zeros((4, 1, 3, 3)),
        responses=np.zeros((4, 2)),
        tiers=np.array(["train"] * 4),
        image_ids=np.arange(4),
    )
    assert ScanData(**ok).n_neurons == 2
    bad = {
        "images": np.zeros((4, 3, 3)),
        "responses": np.zeros((5, 2)),
        "tiers": np.array(["train"] * 3),
        "image_ids": np.arange(3),
    }
    for field, value in bad.items():
        with pytest.raises(ValueError, match=field):
            ScanData(**{**ok, field: value})
    with pytest.raises(ValueError, match="responses"):
        ScanData(**{**ok, "responses": np.full((4, 2), np.nan)})
    with pytest.raises(ValueError, match="tiers"):
        ScanData(**{**ok, "tiers": np.array(["train", "val", "test", "test"])})


def test_build_model_standardizes_with_train_pixels(scans):
    model = build_model(ARCH, scans)
    train_pixels = np.concatenate([s.images[s.mask("train")] for s in scans])
    assert model.input_mean.item() == pytest.approx(train_pixels.mean(), rel=1e-5)
    standardized = model.standardize(train_pixels)
    assert abs(standardized.mean()) < 1e-4 and standardized.std() == pytest.approx(1.0, rel=1e-4)
    rates = model.predict(standardized[:5], "a")
    assert rates.shape == (5, 12) and (rates > 0).all()


def test_fit_raises_validation_correlation(scans):
    model = build_model(ARCH, scans, seed=0)
    history = fit(model, scans, CONFIG, progress=False)
    assert history["best_val_corr"] > history["initial_val_corr"] + 0.2
    assert history["best_val_corr"] > 0.25
    assert max(history["val_corr"]) == pytest.approx(history["best_val_corr"])
    measures = evaluate(model, scans[0])
    assert set(measures) == {
        "test_correlation",
        "correlation_to_average",
        "oracle_correlation",
        "feve",
    }
    assert all(v.shape == (12,) for v in measures.values())
    assert measures["correlation_to_average"].mean() > measures["test_correlation"].mean() > 0.2


def test_same_seed_same_weights(scans):
    short = TrainConfig(
        **{**CONFIG.to_dict(), "max_epochs": 1, "tolerance": -1.0}
    )  # keep the last epoch
    first, second, other = (build_model(ARCH, scans, seed=s) for s in (0, 0, 1))
    for model in (first, second, other):
        fit(model, scans, short, progress=False)
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    assert not torch.equal(first.readouts["a"].features, other.readouts["a"].features)


@pytest.mark.parametrize("requested", ["float32", "bfloat16"])
def test_training_precision_is_applied_and_recorded(scans, requested):
    """precision="bfloat16" runs the training steps under bfloat16 autocast (the core's output
    inside a step is bfloat16), "float32" runs none; both learn, the history says which ran,
    and validation and predictions outside training are float32 either way."""
    model = build_model(ARCH, scans, seed=0)
    seen = []
    model.core.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    config = TrainConfig(**{**CONFIG.to_dict(), "precision": requested})
    history = fit(model, scans, config, progress=False)
    assert history["precision"] == requested
    assert history["best_val_corr"] > 0.25
    assert (torch.bfloat16 in seen) == (requested == "bfloat16")  # training steps
    assert torch.float32 in seen  # validation
    x = torch.from_numpy(model.standardize(scans[0].images[:4]))
    assert model(x, "a").dtype == torch.float32


def test_auto_precision_is_bfloat16_only_where_native():
    from twin.training import native_bfloat16, precision

    cpu = torch.device("cpu")
    assert precision(cpu) == ("bfloat16" if native_bfloat16(cpu) else "float32")
    assert precision(cpu, "float32") == "float32"
    assert precision(torch.device("cuda")) == "bfloat16"
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        TrainConfig(precision="half")


def test_config_round_trip_predicts_identically(scans):
    model = build_model(ARCH, scans, seed=5)
    with torch.no_grad():
        model.input_mean.fill_(100.0)
        for norm in model.core.norms:
            norm.running_var.uniform_(0.5, 2)
    config = json.loads(json.dumps(model.config))
    rebuilt = Twin.from_config(config)
    rebuilt.load_state_dict(model.state_dict())
    x = model.standardize(scans[1].images[:7])
    np.testing.assert_array_equal(rebuilt.predict(x, "b"), model.predict(x, "b"))
    assert rebuilt.input_mean.item() == 100.0
    assert model.barcodes("b").shape == (8, 4, 4) and model.rf_positions("b").shape == (8, 2)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build(name, scans):
    preset = get_preset(name)
    model = build_model(preset, scans[:1])
    assert model.core.config["features"] == list(preset.core["features"])
    assert isinstance(preset.train, TrainConfig)
    preset.core["features"] = (1,)  # a copy: the registry is unchanged
    assert PRESETS[name].core["features"] != (1,)


def test_cosine_schedule_warms_up_decays_to_zero_and_runs_every_epoch(scans):
    """1 warm-up epoch from ~0 to lr, then a cosine to 0 at max_epochs; no early stop (the
    plateau rule would have stopped: tolerance 1 means no epoch ever counts as better)."""
    config = TrainConfig(
        **{**CONFIG.to_dict(), "schedule": "cosine", "max_epochs": 5, "tolerance": 1.0}
    )
    history = fit(build_model(ARCH, scans, seed=0), scans, config, progress=False)
    assert history["epoch"] == [1, 2, 3, 4, 5]
    # "lr" is the rate after each epoch: the peak after the warm-up, then the cosine's values
    expected = [config.lr * 0.5 * (1 + np.cos(np.pi * (e - 1) / 4)) for e in history["epoch"]]
    np.testing.assert_allclose(history["lr"], expected, atol=1e-9)
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear")


def test_anneal_schedule_holds_the_rate_then_decays_linearly_to_zero(scans):
    """No warm-up: lr until the last anneal_epochs, then linear to 0 at max_epochs, all epochs
    run (tolerance 1: the plateau rule would have stopped)."""
    config = TrainConfig(
        **{
            **CONFIG.to_dict(),
            "schedule": "anneal",
            "max_epochs": 5,
            "anneal_epochs": 2,
            "tolerance": 1.0,
        }
    )
    history = fit(build_model(ARCH, scans, seed=0), scans, config, progress=False)
    assert history["epoch"] == [1, 2, 3, 4, 5]
    # "lr" is the rate after each epoch: factor min(1, (max_epochs - epoch) / anneal_epochs)
    np.testing.assert_allclose(history["lr"], [config.lr * f for f in (1, 1, 1, 0.5, 0)], atol=1e-9)
