"""``v1twin import model``: a neuralpredictors model trained elsewhere as a TrainedModel, through
``v1twin populate insilico`` and ``v1twin export`` (real database, real model, real CLI).

The model is the Sensorium baseline's kind (a convolutional ``Stacked2dCore``, a FullGaussian2d
readout), small, fitted a few steps to a tiny simulated scan and saved as a state_dict with its
builder (:func:`build`, importable as ``test_import_model:build``)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import import_virtual_v1

from v1twin import cli
from v1twin.interop.neuralpredictors import NotInstalled, load

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:The averaged value of regularizer:UserWarning"),
    pytest.mark.filterwarnings("ignore:Readout is NOT initialized:UserWarning"),
]
N = 8  # neurons of the tiny scan (t-SNE needs more than 6)
CONFIG = """
[insilico]
mei_steps = 5
energies = [4.0]
"""
CLUSTER_CONFIG = """
[alignment]
n_betas = 2
max_iter = 30
[clustering]
n_clusters = 2
"""


def build(n_neurons: int, data_key: str, hidden: int = 4, rotations: int = 0):
    """A small neuralpredictors FiringRateEncoder for 36 x 64 images: a Stacked2dCore (or, with
    ``rotations``, a RotationEquivariant2dCore) and one FullGaussian2d readout."""
    load()
    from neuralpredictors.layers.cores import RotationEquivariant2dCore, Stacked2dCore
    from neuralpredictors.layers.encoders import FiringRateEncoder
    from neuralpredictors.layers.readouts import FullGaussian2d, MultiReadoutBase

    torch.manual_seed(0)
    common = dict(input_channels=1, hidden_channels=hidden, input_kern=7, hidden_kern=5)
    common.update(layers=2, pad_input=True, gamma_input=0.0, stack=-1)
    if rotations:
        core = RotationEquivariant2dCore(num_rotations=rotations, gamma_hidden=0.0, **common)
    else:
        core = Stacked2dCore(**common)
    with torch.no_grad():
        shape = tuple(core(torch.zeros(1, 1, 36, 64)).shape[1:])
    readout = MultiReadoutBase(
        {data_key: shape}, {data_key: n_neurons}, base_readout=FullGaussian2d, bias=True
    )
    return FiringRateEncoder(core, readout).eval()


@pytest.fixture(scope="module")
def scan(db, tmp_path_factory):
    """One tiny simulated scan (36 x 64 images) in the test schemas; removed afterwards."""
    try:
        load()
    except NotInstalled as err:
        pytest.skip(str(err))
    (sim,) = import_virtual_v1(
        db,
        tmp_path_factory.mktemp("virtual_v1"),
        n_scans=1,
        n_neurons=N,
        n_train=200,
        n_validation=40,
        n_test_images=8,
        n_repeats=3,
        seed=3,
    )
    yield sim
    db["recording"].Scan.delete(prompt=False, part_integrity="cascade")
    (db["model"].ModelConfig & "preset = 'external'").delete(prompt=False, part_integrity="cascade")
    assert not db["model"].ExternalModel()


def _fitted(sim, steps: int = 15):
    """``build`` fitted ``steps`` Adam steps (Poisson loss) to the scan's train tier."""
    model = build(N, sim.name)
    train = sim.tiers == "train"
    x = torch.tensor(sim.images[train], dtype=torch.float32)
    x = (x - x.mean()) / x.std()
    y = torch.tensor(sim.responses[train], dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for step in range(steps):
        i = torch.arange(step * 32, step * 32 + 32) % len(x)
        out = model(x[i], data_key=sim.name)
        loss = (out - y[i] * torch.log(out + 1e-8)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _rows(db) -> dict:
    m = db["model"]
    return {t.__name__: len(t()) for t in (m.ModelConfig, m.ExternalModel, m.TrainedModel)}


def _import(path, sim, *extra):
    kwargs = json.dumps({"n_neurons": N, "data_key": sim.name})
    args = ["import", "model", str(path), "--scan", sim.name, "--quiet"]
    return cli.main(
        [*args, "--builder", "test_import_model:build", "--builder-kwargs", kwargs, *extra]
    )


def test_imported_model_goes_through_populate_and_export(db, scan, tmp_path, capsys):
    """The exported preferred orientation and orientation index of every neuron equal those of
    the direct ExternalResponseModel search and tuning on the same model; the model has no bar
    codes, so clustering says it skips it; a whole pickled model imports too."""
    from insilico import experiments, search
    from insilico.external import ExternalResponseModel
    from insilico.indices import orientation_index
    from insilico.units import sensorium_pixels_per_degree

    model = _fitted(scan)
    path = tmp_path / "state_dict.pt"
    torch.save(model.state_dict(), path)
    assert _import(path, scan) == 0
    out = capsys.readouterr().out
    assert "no bar codes" in out and "skipped for this model" in out
    (key,) = (db["model"].TrainedModel & db["model"].ExternalModel.proj()).keys()
    config = tmp_path / "tiny.toml"
    config.write_text(CONFIG)
    assert cli.main(["populate", "clustering", "insilico", "--config", str(config), "-q"]) == 0
    printed = capsys.readouterr()
    assert f"clustering skips imported model {key['model_hash']}" in printed.out
    assert "%|" not in printed.err  # --quiet: no make shows a bar (GaborSet did)
    assert (
        cli.main(
            ["export", "--out", str(tmp_path / "x"), "--where", f"model_hash={key['model_hash']}"]
        )
        == 0
    )
    neurons = pd.read_csv(tmp_path / "x" / "neurons.csv")
    assert not (tmp_path / "x" / "clusters.csv").exists()
    assert len(neurons) == N and (neurons["cluster"] == -1).all()
    assert neurons["orientation_index"].notna().all() and neurons["plaid_index"].notna().all()

    ppd = sensorium_pixels_per_degree((36, 64))
    direct = ExternalResponseModel(model, scan.name, (36, 64), pixels_per_degree=ppd)
    best = search.optimal_gabor(direct, search.GaborGrid.cpu(ppd))
    np.testing.assert_allclose(neurons["preferred_orientation"], best.orientation, atol=1e-6)
    np.testing.assert_allclose(neurons["rf_x"], direct.rf_positions[:, 0], atol=1e-4)
    params = {k: best[k].values for k in search.GABOR_KEYS}
    curves = experiments.orientation_tuning(direct, params, 16)
    np.testing.assert_allclose(
        neurons["orientation_index"], orientation_index(curves), rtol=1e-4, atol=1e-6
    )
    assert len(np.unique(np.round(best.orientation.values, 3))) > 1  # not one answer for all

    whole = tmp_path / "module.pt"
    torch.save(model, whole)
    assert cli.main(["import", "model", str(whole), "--scan", scan.name, "--quiet"]) == 0
    trained = db["model"].TrainedModel & db["model"].ExternalModel.proj()
    (new,) = [k for k in trained.keys() if k != key]
    rebuilt, spec = db["model"].load_external(new)
    assert spec["format"] == "module" and spec["data_keys"] == {scan.name: scan.name}
    x = torch.randn(3, 1, 36, 64)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, data_key=scan.name), model(x, data_key=scan.name))


def test_bad_model_files_give_clear_errors_and_write_nothing(db, scan, tmp_path, capsys):
    """Each wrong file, builder, scan, canvas or neuron count stops the import with an error
    naming what is wrong, before any row is written."""
    good, seven, text = tmp_path / "good.pt", tmp_path / "seven.pt", tmp_path / "notes.txt"
    torch.save(build(N, scan.name).state_dict(), good)
    torch.save(build(N + 1, scan.name).state_dict(), seven)
    text.write_text("not a model")

    def builder(n=N):
        kwargs = json.dumps({"n_neurons": n, "data_key": scan.name})
        return ["--builder", "test_import_model:build", "--builder-kwargs", kwargs]

    cases = [
        ([text], "does not load as a pickled nn.Module"),
        ([good], "holds a dict of"),  # a state_dict without its builder
        ([good, "--builder", "nosuch:build"], "builder 'nosuch:build' cannot be imported"),
        ([seven, *builder()], "does not fit the model that 'test_import_model:build' builds"),
        (
            [seven, *builder(N + 1)],
            f"returns ({N + 1},) neurons for a batch of 2; the scan has {N}",
        ),
        ([good, *builder(), "--canvas", "18", "32"], "feature map, its readout expects"),
        ([good, *builder(), "--canvas", "30", "30"], "aspect"),
        ([good, *builder(), "--data-key", "x"], "unknown data_key 'x'"),
    ]
    before = _rows(db)
    for args, message in cases:
        args = ["import", "model", str(args[0]), "--scan", scan.name, *args[1:]]
        assert cli.main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err, (args, err)
        assert _rows(db) == before, args
    assert cli.main(["import", "model", str(good), "--scan", "nosuch", *builder()]) == 2
    assert "scans ['nosuch'] are not in" in capsys.readouterr().err
    assert _rows(db) == before


def test_rotation_equivariant_model_is_clustered_from_its_readout(db, scan, tmp_path, capsys):
    """An imported model with a RotationEquivariant2dCore and FullGaussian2d readouts: its bar
    codes are the readout's feature vectors read rotation-major, and the clustering stage and
    the per-cluster in-silico tables run on it."""
    from clustering import as_barcodes

    model = build(N, scan.name, hidden=2, rotations=4)
    with torch.no_grad():  # distinct neurons (the initial feature vectors are all equal)
        model.readout[scan.name].features.normal_()
    path = tmp_path / "equivariant.pt"
    torch.save(model.state_dict(), path)
    kwargs = json.dumps({"n_neurons": N, "data_key": scan.name, "hidden": 2, "rotations": 4})
    args = ["import", "model", str(path), "--scan", scan.name, "--quiet"]
    assert (
        cli.main([*args, "--builder", "test_import_model:build", "--builder-kwargs", kwargs]) == 0
    )
    assert "clustering: bar codes" in capsys.readouterr().out
    m = db["model"]
    (key,) = (m.TrainedModel & (m.ExternalModel & "barcode_order = 'rotation-major'")).keys()
    config = tmp_path / "tiny.toml"
    config.write_text(CONFIG + CLUSTER_CONFIG)
    assert cli.main(["populate", "clustering", "insilico", "--config", str(config), "-q"]) == 0
    clustering, insilico = db["clustering"], db["insilico"]
    codes = np.stack((clustering.Readout.Unit & key).to_arrays("barcode", order_by="unit_id"))
    flat = model.readout[scan.name].features.detach().numpy()[0, :, 0, :].T
    unit_order = np.argsort(
        (db["recording"].Scan.Neuron & {"scan_key": scan.name}).to_arrays(
            "unit_id", order_by="neuron_idx"
        )
    )
    np.testing.assert_allclose(codes, as_barcodes(flat, 4, "rotation-major")[unit_order], rtol=1e-6)
    assert codes.shape == (N, 2, 4)
    assert len(clustering.Clustering.Unit & key) == N
    assert len(insilico.ClusterOptimalGabor.Cluster & key) >= 1
    where = f"model_hash={key['model_hash']}"
    assert cli.main(["export", "--out", str(tmp_path / "x"), "--where", where]) == 0
    neurons = pd.read_csv(tmp_path / "x" / "neurons.csv")
    assert (neurons["cluster"] >= 0).all() and (tmp_path / "x" / "clusters.csv").exists()
