"""End to end on a tiny virtual V1: every stage populates; many workers share the work; a
worker killed mid-``make`` leaves nothing behind and the next one completes the key."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from conftest import import_virtual_v1

pytestmark = pytest.mark.slow

TINY_CONFIG = """
[model]
max_epochs = {epochs}
[alignment]
n_betas = 2
max_iter = 30
[clustering]
n_clusters = 3
heldout_max_k = 4
[insilico]
mei_steps = 10
energies = [4.0, 8.0]
"""


@pytest.fixture(scope="module")
def tiny(db, tmp_path_factory):
    """Three tiny simulated scans imported into the test schemas; removed afterwards."""
    scans = import_virtual_v1(
        db,
        tmp_path_factory.mktemp("virtual_v1"),
        n_scans=3,
        n_neurons=12,
        n_train=240,
        n_validation=60,
        n_test_images=10,
        n_repeats=3,
        seed=1,
    )
    yield scans
    db["recording"].Scan.delete(prompt=False, part_integrity="cascade")


def _config(tmp_path, epochs=1):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_CONFIG.format(epochs=epochs))
    return path


def _cli(*args) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "v1twin.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_every_stage_populates(db, tiny, tmp_path):
    from v1twin import cli, pipeline

    assert cli.main(["populate", "--config", str(_config(tmp_path))]) == 0
    for table in pipeline.tables():
        assert len(table) >= 1, f"{table.__class__.__name__} is empty"
    n_neurons = sum(len(s.unit_ids) for s in tiny)
    ins = db["insilico"]
    for part in (
        db["model"].TrainedModel.Unit,
        db["clustering"].Clustering.Unit,
        ins.OptimalGabor.Unit,
        ins.PhaseTuning.Unit,
        ins.StimulusComparison.Unit,
        ins.NonlinearityIndex.Unit,
    ):
        assert len(part()) == n_neurons, part.__name__
    # the GLM baseline sees the twin's input resolution (DT Eq. 18 compares like with like)
    twin_down = {a["downsample"] for a in db["model"].TrainedModel().to_arrays("architecture")}
    assert set(db["model"].GLM().to_arrays("downsample")) == twin_down
    phase = ins.PhaseTuning.Unit().to_arrays("phase_index")
    assert np.all(np.isfinite(phase)) and np.all((phase >= 0) & (phase <= 1))
    _check_battery_at_cluster_gabor(db, n_neurons)
    # trained on standardized responses: each neuron's factor is its train-tier s.d.
    from twin.data import ScanData

    for s in tiny:
        got = (db["model"].TrainedModel.Unit & {"scan_key": s.name}).to_arrays(
            "response_sd", order_by="unit_id"
        )
        want = ScanData(s.name, s.images, s.responses, s.tiers, s.image_ids).response_scale()
        np.testing.assert_allclose(got.astype(float), want, rtol=1e-5)
    # A second populate finds nothing to do.
    results = pipeline.populate(
        __import__("v1twin.config", fromlist=["load"]).load(_config(tmp_path))
    )
    assert all(r["success_count"] == 0 for r in results.values())


def _check_battery_at_cluster_gabor(db, n_neurons):
    """Each neuron's stimulus for the cluster battery is its cluster's optimal Gabor (shared size,
    sf, contrast, phase) at its own RF and orientation (+ the offset, mod pi); the four tables of
    the battery at it have a row per neuron with finite indices."""
    ins = db["insilico"]
    cog = ins.ClusterOptimalGabor
    ids = ["scan_key", "unit_id"]
    shared = pd.DataFrame(cog.Cluster().to_dicts())[
        ["cluster", "size", "sf", "contrast", "phase", "orientation_offset"]
    ]
    own = pd.DataFrame(ins.OptimalGabor.Unit().to_dicts())[[*ids, "x", "y", "orientation"]]
    labels = pd.DataFrame(db["clustering"].Clustering.Unit().to_dicts())[[*ids, "cluster"]]
    rows = (
        pd.DataFrame(cog.Unit().to_dicts())
        .merge(labels, on=ids)
        .merge(shared, on="cluster", suffixes=("", "_c"))
        .merge(own, on=ids, suffixes=("", "_own"))
    )
    assert len(rows) == n_neurons
    for k in ("size", "sf", "contrast", "phase"):
        np.testing.assert_allclose(rows[k], rows[f"{k}_c"])
    np.testing.assert_allclose(rows[["x", "y"]].to_numpy(), rows[["x_own", "y_own"]].to_numpy())
    turn = rows["orientation"] - rows["orientation_own"] - rows["orientation_offset"]
    np.testing.assert_allclose(np.mod(turn + 0.1, np.pi) - 0.1, 0.0, atol=1e-5)
    for table, index in (
        (ins.ClusterOrientationTuning, "orientation_index"),
        (ins.ClusterPhaseTuning, "phase_f1f0"),
        (ins.ClusterSizeContrastTuning, "suppression_index"),
        (ins.ClusterPlaidTuning, "plaid_index"),
    ):
        assert np.isfinite(table.Unit().to_arrays(index)).sum() == n_neurons, table.__name__


def test_report_export_and_notebook_on_pipeline_data(db, tiny, tmp_path):
    """The demo's outputs from real tables: every figure, the export, the notebook headless."""
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient

    from v1twin import export

    written = export.report(tmp_path / "report")
    assert {
        "tsne_clusters",
        "cluster_meis",
        "confusion",
        "combinatorial_code",
        "battery_sources",
        "index",
    } <= set(written)
    for path in written.values():
        assert Path(path).stat().st_size > 1000
    with pytest.raises(KeyError, match="no_such_attribute"):
        export.export(tmp_path / "bad", {"no_such_attribute": 1})  # never silently ignored
    paths = export.export(tmp_path / "export")
    neurons = pd.read_csv(paths["neurons"])
    assert len(neurons) == sum(len(s.unit_ids) for s in tiny)
    assert (
        neurons[["cluster", "feve", "phase_index", "plaid_index", "gabor_vs_mei"]]
        .notna()
        .all()
        .all()
    )
    # the battery at both Gabors: the 'neuron' rows are neurons.csv's indices
    battery = pd.read_csv(paths["battery"])
    assert battery.groupby("gabor_source").size().to_dict() == {
        "cluster": len(neurons),
        "neuron": len(neurons),
    }
    at_neuron = battery[battery.gabor_source == "neuron"].merge(neurons, on=["scan", "unit_id"])
    for index in ("orientation_index", "phase_f1f0", "suppression_index", "plaid_index"):
        np.testing.assert_allclose(at_neuron[f"{index}_x"], at_neuron[f"{index}_y"])
    assert battery[battery.gabor_source == "cluster"].notna().all().all()
    root = Path(__file__).resolve().parents[1]
    nb = nbformat.read(root / "notebooks" / "explore_clusters.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(root)}}
    ).execute()
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.output_type == "error"
    ]
    assert not errors


def test_two_seeds_store_reliabilities_shown_by_report_and_export(db, tiny, tmp_path):
    """[model] n_seeds = 2: one TrainedModel per seed, each index's reliability across them
    (known: phase_f1f0 = 2 phase_index, the same ICC), NULL for the one-seed set; the export
    and the report take seed 0's clustering, say so, and write/show the reliabilities."""

    from v1twin import cli, config, export, pipeline

    path = tmp_path / "seeds.toml"
    path.write_text(TINY_CONFIG.format(epochs=1).replace("[model]\n", "[model]\nn_seeds = 2\n"))
    assert cli.main(["populate", "--config", str(path)]) == 0
    chosen = pipeline.add_parameters(config.load(path))
    an, models = db["analysis"], [{"model_hash": h} for h in chosen["model_hash"]]
    assert len(chosen["model_hash"]) == 2 and len(db["model"].TrainedModel & models) == 2
    stored = an.IndexReliability.Index & {"seedset_hash": chosen["seedset_hash"]}
    icc = dict(zip(*stored.to_arrays("index_name", "icc")))
    assert set(icc) == set(an.RELIABILITY_INDICES)
    finite = {k: v for k, v in icc.items() if v is not None and np.isfinite(v)}
    assert {"orientation_index", "phase_index", "plaid_index"} <= set(finite), icc
    assert all(-1 <= v <= 1 for v in finite.values())
    assert finite["phase_f1f0"] == pytest.approx(finite["phase_index"], abs=1e-4)
    one_seed = an.IndexReliability.Index * db["model"].SeedSet & "n_seeds = 1"
    assert len(one_seed) and all(v is None for v in one_seed.to_arrays("icc"))  # unknown, not 1

    with pytest.warns(UserWarning, match=r"twins of seeds \[0, 1\]; taking seed 0's"):
        paths = export.export(tmp_path / "export", chosen)
    written = pd.read_csv(paths["reliability"]).set_index("index_name")
    assert (written["n_seeds"] == 2).all()
    assert written.loc["plaid_index", "icc"] == pytest.approx(finite["plaid_index"])
    corr = pd.read_csv(paths["index_correlations"])
    assert {"spearman_r", "spearman_r_corrected", "reliability_a"} <= set(corr.columns)
    assert corr["spearman_r_corrected"].abs().max() <= 1
    with pytest.warns(UserWarning, match="seeds"):
        html = export.report(tmp_path / "report", chosen)["index"].read_text()
    assert "Reliability of each index across seeds" in html and "spearman_r_corrected" in html


def test_three_workers_compute_every_key_exactly_once(db, tiny, tmp_path):
    from schemas import model

    model.GLM.delete(prompt=False, part_integrity="cascade")
    if model.GLM().jobs.is_declared:
        model.GLM().jobs.drop()  # declared afresh by the workers, all started at once
    workers = [_cli("worker", "model", "--config", str(_config(tmp_path))) for _ in range(3)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    failed = [(w.returncode, out[-3000:]) for w, out in zip(workers, outputs) if w.returncode != 0]
    assert not failed, failed
    jobs = model.GLM().jobs
    assert len(jobs.errors) == 0, jobs.errors.to_dicts()
    done = (jobs & "status='success'").to_arrays("scan_key")
    scans = sorted(s.name for s in tiny)
    assert sorted(done) == scans  # none missing
    computed = [
        int(line.split()[1])
        for out in outputs
        for line in out.splitlines()
        if line.startswith("GLM ")
    ]
    assert sum(computed) == len(scans), outputs  # no key computed twice
    assert sorted(model.GLM().to_arrays("scan_key")) == scans


def test_killed_worker_leaves_no_partial_rows_and_next_worker_completes(db, tiny, tmp_path):
    from schemas import model

    model.TrainedModel.delete(prompt=False, part_integrity="cascade")
    model.TrainedModel().jobs.delete()
    config = str(_config(tmp_path, epochs=4))
    victim = _cli("worker", "model", "--config", config)
    jobs = model.TrainedModel().jobs
    deadline = time.monotonic() + 300
    while not len(jobs.reserved):
        assert victim.poll() is None, victim.communicate()[0]
        assert time.monotonic() < deadline, "the worker never reserved a key"
        time.sleep(0.5)
    time.sleep(2)  # inside make(): loading the scans or training
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert len(model.TrainedModel()) == 0 and len(model.TrainedModel.Unit()) == 0
    assert len(jobs.reserved) == 1  # the dead worker's reservation
    rescuer = _cli("worker", "model", "--config", config)
    output = rescuer.communicate(timeout=600)[0]
    assert rescuer.returncode == 0, output
    assert "released 1 keys reserved by dead workers" in output
    assert len(model.TrainedModel()) == 1
    assert len(model.TrainedModel.Unit()) == sum(len(s.unit_ids) for s in tiny)
    assert len(jobs.reserved) == 0
