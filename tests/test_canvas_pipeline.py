"""A Sensorium-size scan (images 144 x 256) through the whole pipeline: the twin sees the
36 x 64 canvas, the optimal Gabors are exported in degrees, and k is chosen from the data."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from clustering.mixture import K_RULE

pytestmark = pytest.mark.slow

CONFIG = """
[model]
max_epochs = 1
[alignment]
n_betas = 2
max_iter = 30
[clustering]
heldout_max_k = 4
[insilico]
mei_steps = 10
energies = [13.0, 26.0]
"""


@pytest.fixture(scope="module")
def big_scan(db, tmp_path_factory):
    """One simulated scan whose stored images are 144 x 256 (each 36 x 64 pixel a 4 x 4 block)."""
    from simulator import simulate_scans, write_simulation
    from v1twin.sensorium import read_sensorium

    (scan,) = simulate_scans(
        n_scans=1, n_neurons=24, n_train=240, n_validation=60, n_test_images=10, n_repeats=3, seed=2
    )
    big = dataclasses.replace(scan, images=np.kron(scan.images, np.ones((1, 1, 4, 4), np.float32)))
    (folder,) = write_simulation(tmp_path_factory.mktemp("sensorium_size"), [big])
    db["recording"].insert_recording(read_sensorium(folder))
    yield scan, folder
    db["recording"].Scan.delete(prompt=False, part_integrity="cascade")


def test_144x256_scan_runs_on_the_36x64_canvas_and_exports_degrees(db, big_scan, tmp_path):
    from insilico import search
    from insilico.units import sensorium_pixels_per_degree
    from v1twin import cli
    from v1twin import export as ex

    path = tmp_path / "c.toml"
    path.write_text(CONFIG)
    assert cli.main(["populate", "--config", str(path)]) == 0
    scan_row = db["recording"].Scan.fetch1()
    assert (scan_row["image_height"], scan_row["image_width"]) == (144, 256)  # stored raw
    architecture = db["model"].TrainedModel.fetch1("architecture")
    assert architecture["image_shape"] == [36, 64]
    ppd = db["insilico"].OptimalGabor.fetch1("pixels_per_degree")
    assert ppd == pytest.approx(sensorium_pixels_per_degree((36, 64)), rel=1e-6)

    paths = ex.export(tmp_path / "export")
    import pandas as pd

    neurons = pd.read_csv(paths["neurons"])
    assert len(neurons) == 24
    assert set(np.round(neurons.gabor_size_deg, 4)) <= set(search.CPU_GABOR_DEG["sizes"])
    assert set(np.round(neurons.gabor_sf_cpd, 4)) <= set(search.CPU_GABOR_DEG["sfs"])
    summary = json.loads(paths["clustering"].read_text())
    assert summary["k_reason"].startswith(K_RULE)
    assert len(summary["stability"]) == len(summary["heldout_k"])
    assert summary["n_clusters"] == neurons.cluster.nunique()
    assert summary["n_clusters"] in summary["heldout_k"]


def test_a_canvas_the_images_cannot_make_is_refused_before_anything_is_written(
    db, big_scan, tmp_path
):
    from v1twin import config, pipeline

    cfg = config.load()
    cfg["model"]["canvas"] = [36, 36]
    cfg["model"]["max_epochs"] = 1
    trained = db["model"].TrainedModel()
    before = len(trained)
    with pytest.raises(ValueError, match=r"static90001-1-1-VirtualV1.*144 x 256.*36 x 36"):
        pipeline.populate(cfg, stages=["model"])
    assert len(trained) == before
