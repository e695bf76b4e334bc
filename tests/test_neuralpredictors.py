"""v1twin against the field's tools (neuralpredictors 0.3, the optional extra
``v1twin[neuralpredictors]``, imported through :func:`v1twin.interop.neuralpredictors.load`):
bar codes of its rotation-equivariant core, its metrics, and its FileTreeDataset reader.

Skipped only when neuralpredictors is not installed (``make install`` installs it)."""

import h5py
import numpy as np
import pytest
import torch
from conftest import make_scan_arrays
from sklearn.metrics import adjusted_rand_score

from clustering import CyclicAligner, as_barcodes, fit_clusters
from twin import metrics
from v1twin.interop.neuralpredictors import TORCHVISION_STUB, NotInstalled, load
from v1twin.sensorium import read_sensorium

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:The averaged value of regularizer:UserWarning"),
    pytest.mark.filterwarnings("ignore:Readout is NOT initialized:UserWarning"),
]
O, F = 8, 3  # noqa: E741 -- orientations (neuralpredictors' num_rotations), features (hidden_channels)


@pytest.fixture(scope="module")
def npred():
    try:
        return load()
    except NotInstalled as err:
        pytest.skip(str(err))


def _core(npred):
    from neuralpredictors.layers.cores import RotationEquivariant2dCore

    torch.manual_seed(0)
    return RotationEquivariant2dCore(
        input_channels=1,
        hidden_channels=F,
        input_kern=7,
        hidden_kern=5,
        layers=2,
        num_rotations=O,
        pad_input=True,
        gamma_input=0.0,
        gamma_hidden=0.0,
        stack=-1,  # the last layer only: several stacked layers are rotation-major per layer
    ).eval()


def test_shim_leaves_a_clear_error_for_the_only_torchvision_use(npred):
    import torchvision

    if not hasattr(torchvision, TORCHVISION_STUB):
        pytest.skip("a real torchvision is importable here")
    with pytest.raises(ImportError, match="TransferLearningCore"):
        torchvision.models.vgg16  # noqa: B018


def test_neuralpredictors_core_is_rotation_major(npred):
    """Rotating the input by 90 degrees (O/4 steps) cyclically shifts the centre pixel's bar code
    along O when its channels are read rotation-major, and when read feature-major it is no
    cyclic shift at all."""
    core = _core(npred)
    x = torch.randn(1, 1, 21, 21)
    with torch.no_grad():
        a = core(x)[:, :, 10, 10].numpy()
        b = core(torch.rot90(x, 1, (2, 3)))[:, :, 10, 10].numpy()
    assert a.shape == (1, F * O)
    scale = np.abs(a).max()

    def misfit(order):  # (O,) max error of b against each cyclic shift of a
        ra, rb = (as_barcodes(v, O, order)[0] for v in (a, b))
        return np.array([np.abs(np.roll(ra, k, -1) - rb).max() for k in range(O)]) / scale

    assert misfit("rotation-major")[O // 4] < 1e-5
    assert misfit("feature-major").min() > 0.1


def test_readout_barcodes_align_and_cluster_as_in_v1twin_order(npred):
    """Readout feature vectors of a neuralpredictors FullGaussian2d on its rotation-equivariant
    core: 3 types, each neuron its type rotated by a random number of steps (a roll of the
    rotation blocks) plus noise. Read with order="rotation-major", alignment and clustering give
    exactly the result of the same bar codes in v1twin's (feature-major) order and recover the
    types; read in the wrong order they do not."""
    from neuralpredictors.layers.readouts import FullGaussian2d

    rng = np.random.default_rng(0)
    n, types = 24, np.arange(24) % 3
    prototypes = rng.normal(size=(3, F, O))
    steps = rng.integers(0, O, n)
    codes = np.stack([np.roll(prototypes[t], k, -1) for t, k in zip(types, steps)])
    codes += 0.05 * rng.normal(size=codes.shape)  # (N, F, O), v1twin's order
    readout = FullGaussian2d(in_shape=(F * O, 21, 21), outdims=n, bias=False).eval()
    core = _core(npred)
    weights = torch.tensor(codes.transpose(0, 2, 1).reshape(n, O * F).T, dtype=torch.float32)
    x = torch.randn(2, 1, 21, 21)
    with torch.no_grad():  # channel o*F + f of neuron n (neuralpredictors' view(B, O, F, H, W))
        readout.mu.zero_()  # every neuron reads the centre pixel
        readout.features.copy_(weights.view(O, F, n).roll(-(O // 4), 0).reshape(1, -1, 1, n))
        y_rolled = readout(core(x))
        readout.features.copy_(weights[None, :, None])
        y_rotated = readout(core(torch.rot90(x, 1, (2, 3))))
    # rolling a neuron's rotation blocks by O/4 = rotating the image by 90 degrees: the roll is a
    # rotation of the neuron, so the types are the same neurons rotated
    torch.testing.assert_close(y_rolled, y_rotated, rtol=1e-4, atol=1e-4)

    flat = readout.features.detach()[0, :, 0, :].T.numpy().astype(np.float64)  # (N, O*F)
    fast = dict(betas=(0.1, 1.0), max_iter=1000, progress=False)
    ours = CyclicAligner(**fast).fit_transform(codes.reshape(n, -1), O, "feature-major")
    theirs = CyclicAligner(**fast).fit_transform(flat, O, "rotation-major")
    np.testing.assert_allclose(theirs, ours, atol=1e-6)
    labels = [fit_clusters(a, "gmm", 3, random_state=0)[0] for a in (ours, theirs)]
    np.testing.assert_array_equal(labels[0], labels[1])
    assert adjusted_rand_score(types, labels[1]) == 1.0
    wrong = CyclicAligner(**fast).fit_transform(flat, O, "feature-major")
    assert adjusted_rand_score(types, fit_clusters(wrong, "gmm", 3, random_state=0)[0]) < 0.9


def _repeats(n_images=30, n_neurons=5, seed=0, single=False):
    """Trials of images with 2-5 repeats (one image with 1 repeat if ``single``), in random order:
    responses (T, N), predictions (T, N), image_ids (T,)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(2, 6, n_images)
    if single:
        counts[0] = 1
    image_ids = rng.permutation(np.repeat(np.arange(n_images), counts))
    signal = rng.gamma(2.0, 1.0, (n_images, n_neurons))
    responses = rng.poisson(signal[image_ids] * 3).astype(np.float64)
    predictions = 3 * signal[image_ids] + rng.normal(0, 1.0, responses.shape)
    return responses, predictions, image_ids


def _by_image(values, image_ids):
    """neuralpredictors' layout: one (repeats, N) array per image."""
    return [values[image_ids == i] for i in np.unique(image_ids)]


def test_metrics_agree_with_neuralpredictors_measures(npred):
    """Test correlation, correlation to average, oracle correlation and FEVE equal
    neuralpredictors.measures on the same predictions to 1e-6 when every image has >= 2 repeats
    (the measures' only difference is neuralpredictors' eps = 1e-8 added to the std)."""
    from neuralpredictors.measures import np_functions as m

    r, p, ids = _repeats()
    np.testing.assert_allclose(
        metrics.single_trial_correlation(p, r), m.corr(p, r, axis=0), atol=1e-6
    )
    np.testing.assert_allclose(metrics.correlation(p, r), m.corr(p, r, axis=0, eps=0), atol=1e-12)
    mean_p = np.stack([x.mean(0) for x in _by_image(p, ids)])
    mean_r = np.stack([x.mean(0) for x in _by_image(r, ids)])
    np.testing.assert_allclose(
        metrics.correlation_to_average(p, r, ids), m.corr(mean_p, mean_r, axis=0), atol=1e-6
    )
    np.testing.assert_allclose(
        metrics.oracle_correlation(r, ids), m.oracle_corr_jackknife(_by_image(r, ids)), atol=1e-6
    )
    np.testing.assert_allclose(
        metrics.feve(p, r, ids), m.fev(_by_image(r, ids), _by_image(p, ids)), atol=1e-6
    )
    constant = np.ones_like(p)  # both give 0 for a constant prediction
    np.testing.assert_allclose(
        metrics.correlation(constant, r), m.corr(constant, r, axis=0), atol=1e-12
    )


def test_single_repeat_images_are_the_documented_difference(npred):
    """With an image shown once (twin.metrics docstrings): neuralpredictors' jackknife oracle
    counts its trial with an oracle of 0, v1twin leaves it out (so equals the jackknife over
    the other images); neuralpredictors' FEVE is NaN, v1twin's is finite."""
    from neuralpredictors.measures import np_functions as m

    r, p, ids = _repeats(single=True)
    multi = ids != 0
    ours = metrics.oracle_correlation(r, ids)
    np.testing.assert_allclose(ours, m.oracle_corr_jackknife(_by_image(r[multi], ids[multi])))
    with np.errstate(invalid="ignore"):  # its 0/0 for the single repeat, then set to 0
        assert np.abs(ours - m.oracle_corr_jackknife(_by_image(r, ids))).max() > 1e-3
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        assert np.isnan(m.fev(_by_image(r, ids), _by_image(p, ids))).all()
    assert np.isfinite(metrics.feve(p, r, ids)).all()


def test_filetree_dataset_reads_v1twins_folder(npred, scan_folder):
    """write_sensorium's folder through neuralpredictors' FileTreeDataset and the Sensorium
    loaders' NeuroNormalizer (which needs meta/statistics)."""
    from neuralpredictors.data.datasets import FileTreeDataset
    from neuralpredictors.data.transforms import NeuroNormalizer

    folder, arrays = scan_folder
    ds = FileTreeDataset(str(folder), "images", "responses", "behavior", "pupil_center")
    assert len(ds) == len(arrays["tiers"]) and ds.n_neurons == arrays["responses"].shape[1]
    for i in (0, 7, len(ds) - 1):
        item = ds[i]
        np.testing.assert_array_equal(item.images, arrays["images"][i])
        np.testing.assert_array_equal(item.responses, arrays["responses"][i])
        np.testing.assert_array_equal(item.pupil_center, arrays["pupil_center"][i])
    np.testing.assert_array_equal(ds.trial_info.tiers, arrays["tiers"])
    np.testing.assert_array_equal(ds.trial_info.frame_image_id, arrays["image_ids"])
    np.testing.assert_array_equal(ds.neurons.unit_ids, arrays["unit_ids"])
    np.testing.assert_array_equal(
        ds.neurons.cell_motor_coordinates, arrays["cell_motor_coordinates"]
    )
    norm = NeuroNormalizer(ds)
    item = norm(ds[3])
    std = arrays["responses"].std(0)
    np.testing.assert_allclose(item.responses, arrays["responses"][3] / std, rtol=1e-5)
    images = arrays["images"]
    np.testing.assert_allclose(
        item.images, (images[3] - images.mean()) / images.std(), rtol=1e-4, atol=1e-5
    )


def test_read_sensorium_reads_a_folder_neuralpredictors_wrote(npred, tmp_path):
    """The reverse: a static h5 file converted by neuralpredictors' own
    ``FileTreeDataset.initialize_from`` (byte strings and all) reads with read_sensorium."""
    from neuralpredictors.data.datasets import FileTreeDataset

    a = make_scan_arrays(seed=3)
    n, t = a["responses"].shape[1], len(a["tiers"])
    h5 = tmp_path / "static22564-2-13-preproc0.h5"
    with h5py.File(h5, "w") as f:
        for key in ("images", "responses", "behavior", "pupil_center"):
            f[key] = a[key]
        f["tiers"] = a["tiers"].astype("S")
        f["item_info/frame_image_id"] = a["image_ids"]
        f["item_info/trial_idx"] = np.arange(t)
        f["neurons/unit_ids"] = a["unit_ids"]
        f["neurons/animal_ids"] = np.full(n, 22564)
        f["neurons/sessions"] = np.full(n, 2)
        f["neurons/scan_idx"] = np.full(n, 13)
        f["neurons/area"] = a["area"].astype("S")
        f["neurons/layer"] = a["layer"].astype("S")
        f["neurons/cell_motor_coordinates"] = a["cell_motor_coordinates"]
        f["statistics/responses/all/std"] = a["responses"].std(0)
    folder = tmp_path / "static22564-2-13-preproc0"
    FileTreeDataset.initialize_from(str(h5), outpath=folder)
    assert len(FileTreeDataset(str(folder), "images", "responses")) == t

    rec = read_sensorium(folder)
    assert (rec.animal_id, rec.session, rec.scan_idx) == (22564, 2, 13)
    np.testing.assert_array_equal(rec.responses, a["responses"])
    np.testing.assert_array_equal(rec.tiers, a["tiers"])
    np.testing.assert_array_equal(rec.image_ids, a["image_ids"])
    first = {i: k for k, i in reversed(list(enumerate(a["image_ids"])))}
    np.testing.assert_array_equal(rec.images, a["images"][[first[i] for i in rec.image_index], 0])
    np.testing.assert_array_equal(rec.unit_ids, a["unit_ids"])
    np.testing.assert_array_equal(rec.area, a["area"])
    np.testing.assert_array_equal(rec.motor_coordinates, a["cell_motor_coordinates"])
    np.testing.assert_array_equal(rec.pupil_center, a["pupil_center"])


def _encoder(npred, n_neurons, pad_input):
    """A neuralpredictors FiringRateEncoder (rotation-equivariant core, a FullGaussian2d per
    scan) on the 36 x 64 canvas; pad_input=False crops the map by 6 px (the Sensorium baseline's
    geometry)."""
    from neuralpredictors.layers.cores import RotationEquivariant2dCore
    from neuralpredictors.layers.encoders import FiringRateEncoder
    from neuralpredictors.layers.readouts import FullGaussian2d, MultiReadoutBase

    torch.manual_seed(0)
    core = RotationEquivariant2dCore(
        input_channels=1,
        hidden_channels=F,
        input_kern=7,
        hidden_kern=5,
        layers=2,
        num_rotations=O,
        pad_input=pad_input,
        gamma_input=0.0,
        gamma_hidden=0.0,
        stack=-1,
    )
    with torch.no_grad():
        shape = tuple(core(torch.zeros(1, 1, 36, 64)).shape[1:])
    readout = MultiReadoutBase(
        {k: shape for k in n_neurons}, n_neurons, base_readout=FullGaussian2d, bias=True
    )
    return FiringRateEncoder(core, readout).eval()


def _place(readout, canvas_xy, crop):
    """Set mu so that each neuron reads canvas pixel (x, y); map = canvas cropped by ``crop``."""
    _, h, w = readout.in_shape
    grid = (np.asarray(canvas_xy, float) - crop / 2) / np.array([w - 1, h - 1]) * 2 - 1
    with torch.no_grad():
        readout.mu.copy_(torch.tensor(grid, dtype=torch.float32)[None, :, None])


def test_external_model_rf_positions_come_from_the_readout_mu(npred):
    """RF positions from mu (cropped map, as the Sensorium baseline's unpadded first layer):
    each neuron's response depends on a window of canvas pixels centred on its RF position."""
    from insilico.external import ExternalResponseModel

    enc = _encoder(npred, {"a": 2, "b": 3}, pad_input=False)
    rfs = np.array([[20.0, 12.0], [41.0, 25.0], [9.0, 8.0]])
    _place(enc.readout["b"], rfs, crop=6)
    model = ExternalResponseModel(enc, "b", (36, 64))
    np.testing.assert_allclose(model.rf_positions, rfs, atol=1e-4)
    x = torch.randn(1, 1, 36, 64, requires_grad=True)
    for n, (cx, cy) in enumerate(rfs):
        (grad,) = torch.autograd.grad(model(x)[0, n], x)
        g = grad[0, 0].abs().numpy()
        rows, cols = np.nonzero(g > 1e-4 * g.max())  # not the float32 rounding of mu
        assert (rows.min() + rows.max()) / 2 == cy and (cols.min() + cols.max()) / 2 == cx
    assert model(x).shape == (1, 3) and ExternalResponseModel(enc, "a", (36, 64)).n_neurons == 2
    with pytest.raises(KeyError, match="unknown data_key"):
        ExternalResponseModel(enc, "c", (36, 64))


def test_insilico_orientation_tuning_runs_on_a_neuralpredictors_model(npred):
    """The direct path of insilico on a neuralpredictors model, with a known answer: a neuron
    whose readout is another's with the rotation blocks rolled by O/4 is that neuron rotated by
    90 degrees, so its orientation tuning curve is the other's shifted by half a period."""
    from insilico import model as protocol
    from insilico.experiments import orientation_tuning
    from insilico.external import ExternalResponseModel

    enc = _encoder(npred, {"s": 2}, pad_input=True)
    readout = enc.readout["s"]
    _place(readout, [[20.0, 15.0], [20.0, 15.0]], crop=0)
    with torch.no_grad():
        w = torch.randn(O, F)  # neuron 0; the initial features are all equal
        readout.features[0, :, 0, 0] = w.reshape(-1)
        readout.features[0, :, 0, 1] = w.roll(-(O // 4), 0).reshape(-1)
        readout.bias.zero_()
    model = ExternalResponseModel(enc, "s", (36, 64))
    assert isinstance(model, protocol.ResponseModel)
    params = dict(x=model.rf_positions[:, 0], y=model.rf_positions[:, 1], size=np.full(2, 4.0))
    params.update(sf=np.full(2, 0.15), contrast=np.full(2, 2.0), orientation=np.zeros(2))
    params.update(phase=np.zeros(2))
    curves = orientation_tuning(model, params, 16).values  # (neuron, orientation)
    assert curves.std(1).min() > 1e-3 * curves.mean()  # tuned: the comparison means something
    np.testing.assert_allclose(curves[1], np.roll(curves[0], 8), rtol=1e-4)
