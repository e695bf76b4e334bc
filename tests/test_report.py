"""Figures (v1twin.report) and export files (v1twin.export.write_export) from synthetic inputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from insilico import population as pop

PNG = b"\x89PNG\r\n\x1a\n"


def synthetic_neurons(n_clusters=6, per_cluster=15, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cluster = np.repeat(np.arange(n_clusters), per_cluster)
    n = len(cluster)
    centres = rng.normal(scale=10, size=(n_clusters, 2))
    df = pd.DataFrame(
        dict(
            scan=np.where(np.arange(n) % 2, "1-1-1", "2-1-1"),
            unit_id=np.arange(n) + 1,
            test_corr=rng.uniform(0.1, 0.6, n),
            oracle_corr=rng.uniform(0.5, 0.9, n),
            feve=rng.uniform(0, 0.8, n),
            cluster=cluster,
            alignment_angle=rng.uniform(0, 2 * np.pi, n),
            rf_x=rng.uniform(0, 64, n),
            rf_y=rng.uniform(0, 36, n),
            preferred_orientation=rng.uniform(0, np.pi, n),
            gabor_size_deg=rng.choice([20.0, 40.0], n),
            gabor_sf_cpd=rng.choice([0.02, 0.03, 0.05], n),
            tsne_x=centres[cluster, 0] + rng.normal(size=n),
            tsne_y=centres[cluster, 1] + rng.normal(size=n),
        )
    )
    for index in pop.INDICES:
        df[index] = rng.normal(size=n_clusters)[cluster] + rng.normal(scale=0.3, size=n)
    df["phase_f1f0"] = 2 * df["phase_index"]
    df.loc[0, "nonlinearity_index"] = np.nan
    return df


def synthetic_curves(neurons: pd.DataFrame):
    import xarray as xr

    n = len(neurons)
    rng = np.random.default_rng(1)
    dims = dict(
        orientation=np.linspace(0, np.pi, 8, endpoint=False),
        phase=np.linspace(0, 2 * np.pi, 8, endpoint=False),
        contrast=np.array([0.5, 1, 2]),
        size=np.array([2.0, 4, 8, 16]),
        optimal_contrast=np.array([0.0, 1, 2]),
        orthogonal_contrast=np.array([0.0, 1, 2]),
        stimulus=np.array(["gabor", "dog", "mei"]),
        energy=np.array([4.0, 8, 16]),
    )

    def var(*d):
        return xr.DataArray(
            rng.uniform(size=(n, *(len(dims[x]) for x in d))),
            dims=("neuron", *d),
            coords={x: dims[x] for x in d},
        )

    return xr.Dataset(
        dict(
            orientation_tuning=var("orientation"),
            phase_tuning=var("phase"),
            size_contrast_tuning=var("contrast", "size"),
            plaid_tuning=var("optimal_contrast", "orthogonal_contrast"),
            stimulus_comparison=var("stimulus", "energy"),
        ),
        coords=dict(
            scan=("neuron", neurons["scan"].to_numpy()),
            unit_id=("neuron", neurons["unit_id"].to_numpy()),
            cluster=("neuron", neurons["cluster"].to_numpy()),
        ),
    )


def synthetic_clustering(k=6):
    rng = np.random.default_rng(2)
    c = np.corrcoef(rng.normal(size=(k, 20)))
    return dict(
        heldout_k=np.arange(2, 9),
        heldout_ll=-np.linspace(5, 3, 7) + 0.01 * np.arange(7) ** 2,
        stability=np.array([1.0, 0.97, 0.95, 0.93, 0.8, 0.7, 0.6]),
        confusion=c,
        block=np.array([0, 0, 1, 2, 2, 2]),
        block_order=np.array([1, 0, 2, 5, 3, 4]),
        n_clusters=k,
        k_reason="n_clusters set in the config",
    )


def _assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG, path


@pytest.fixture(scope="module")
def inputs():
    neurons = synthetic_neurons()
    meis = {
        c: [(f"#{i}", np.random.default_rng(i).normal(size=(9, 16))) for i in range(3)]
        for c in range(6)
    }
    return dict(
        neurons=neurons,
        clustering=synthetic_clustering(),
        curves=synthetic_curves(neurons),
        meis=meis,
        battery=synthetic_battery(neurons),
    )


def synthetic_battery(neurons):
    """battery.csv's long format: the neurons' indices at their own Gabor, and lower ones at
    their cluster's."""
    from schemas.analysis import BATTERY_INDICES

    own = neurons[["scan", "unit_id", "cluster"]].assign(gabor_source="neuron")
    at_cluster = own.assign(gabor_source="cluster")
    for name in BATTERY_INDICES:
        values = neurons[name] if name in neurons else np.linspace(0.1, 1, len(neurons))
        own[name], at_cluster[name] = values, 0.8 * values
    return pd.concat([own, at_cluster], ignore_index=True)


def test_each_figure_function_returns_a_figure(inputs):
    from matplotlib.figure import Figure

    from v1twin import report as rp

    n, cl = inputs["neurons"], inputs["clustering"]
    figures = [
        rp.fig_tsne_clusters(n),
        rp.fig_tsne_indices(n),
        rp.fig_neuron_meis(inputs["meis"]),
        rp.fig_cluster_meis({0: np.ones((9, 16)), 3: -np.ones((9, 16))}),
        rp.fig_tuning_examples(inputs["curves"], n),
        rp.fig_heldout_likelihood(cl["heldout_k"], cl["heldout_ll"], 6),
        rp.fig_heldout_likelihood(
            cl["heldout_k"], cl["heldout_ll"], 5, stability=cl["stability"], k_reason="rule"
        ),
        rp.fig_confusion(cl["confusion"], cl["block"], cl["block_order"]),
        rp.fig_index_pairs(n),
        rp.fig_combinatorial_code(n),
        rp.fig_battery_sources(inputs["battery"]),
    ]
    assert all(isinstance(f, Figure) for f in figures)
    at_neuron_only = inputs["battery"][inputs["battery"].gabor_source == "neuron"]
    assert rp.fig_battery_sources(at_neuron_only) is None and rp.fig_battery_sources(None) is None
    # absent inputs: None, not an error
    assert rp.fig_cluster_meis(None) is None and rp.fig_cluster_meis({}) is None
    assert rp.fig_neuron_meis({}) is None and rp.fig_tuning_examples(None, n) is None
    assert rp.fig_tsne_clusters(n.drop(columns=["tsne_x", "tsne_y"])) is None


def test_best_predicted_picks_top_per_cluster(inputs):
    from v1twin import report as rp

    best = rp.best_predicted(inputs["neurons"], n=2)
    assert len(best) == 12
    for c, group in inputs["neurons"].groupby("cluster"):
        top = set(group.nlargest(2, "test_corr")["unit_id"])
        assert set(best.loc[best.cluster == c, "unit_id"]) == top


def test_write_report_writes_valid_pngs_and_index(tmp_path, inputs):
    from v1twin import report as rp

    paths = rp.write_report(tmp_path, **inputs)  # no cluster MEIs: that panel is skipped
    assert "cluster_meis" not in paths
    expected = set(rp.FIGURES) - {"cluster_meis"}
    assert expected <= set(paths)
    for name in expected:
        _assert_png(paths[name])
    html = paths["index"].read_text()
    for name in expected:
        assert f'src="{name}.png"' in html
    assert "skipped" in html and "KS tests" in html and "Combinatorial code" in html


def test_write_report_without_indices_or_embedding(tmp_path):
    """A clustering with no in-silico results yet: the report still writes what it can."""
    from v1twin import report as rp

    neurons = synthetic_neurons()[["scan", "unit_id", "cluster", "test_corr"]]
    paths = rp.write_report(tmp_path, neurons, clustering=synthetic_clustering())
    assert set(paths) == {"heldout_likelihood", "confusion", "index"}
    _assert_png(paths["confusion"])


def test_cli_registration_is_light():
    """`v1twin db status` must not pay for torch because export/report are registered."""
    import subprocess
    import sys

    code = (
        "import argparse, sys; from v1twin import export; p = argparse.ArgumentParser(); "
        "export.add_subcommands(p.add_subparsers(), lambda: None); "
        "a = p.parse_args(['report', '--out', 'x', '--where', 'seed=1']); "
        "assert a.where == ['seed=1']; assert 'torch' not in sys.modules and 'schemas' not in "
        "sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_parse_restriction():
    from v1twin import export as ex

    assert ex.parse_restriction(["clustering_hash=ab12", "seed=3"]) == {
        "clustering_hash": "ab12",
        "seed": 3,
    }
    assert ex.parse_restriction(None) == {}
    with pytest.raises(KeyError, match="ATTRIBUTE=VALUE"):
        ex.parse_restriction(["oops"])


def test_export_column_set_and_files(tmp_path, inputs):
    import xarray as xr

    from v1twin import export as ex

    assert list(ex.NEURON_COLUMNS) == [
        "scan",
        "unit_id",
        "test_corr",
        "oracle_corr",
        "feve",
        "cluster",
        "alignment_angle",
        "rf_x",
        "rf_y",
        "preferred_orientation",
        "gabor_size_deg",
        "gabor_sf_cpd",
        "orientation_index",
        "phase_index",
        "suppression_index",
        "contrast_index",
        "plaid_index",
        "gabor_vs_dog",
        "gabor_vs_mei",
        "dog_vs_mei",
        "nonlinearity_index",
        "phase_f1f0",
    ]
    from schemas import analysis

    assert tuple(analysis.NEURON_COLUMNS) == tuple(ex.NEURON_COLUMNS)
    neurons = inputs["neurons"]
    clusters = ex.cluster_table(neurons, inputs["clustering"])
    paths = ex.write_export(tmp_path, neurons, clusters, inputs["curves"])
    written = pd.read_csv(paths["neurons"])
    assert list(written.columns) == list(ex.NEURON_COLUMNS) and len(written) == len(neurons)
    table = pd.read_csv(paths["clusters"])
    assert len(table) == 6 and table["n_neurons"].sum() == len(neurons)
    assert {"cluster", "n_neurons", "block", "gabor_like", "combination", *pop.INDICES} <= set(
        table.columns
    )
    with xr.open_dataset(paths["tuning_curves"], engine="h5netcdf") as ds:
        assert ds["size_contrast_tuning"].dims == ("neuron", "contrast", "size")
        assert ds["stimulus_comparison"].dims == ("neuron", "stimulus", "energy")
        assert list(ds["stimulus"].values) == ["gabor", "dog", "mei"]
        assert ds["unit_id"].dims == ("neuron",) and ds.sizes["neuron"] == len(neurons)
    with pytest.raises(KeyError, match="cluster"):
        ex.write_export(tmp_path, neurons.drop(columns=["cluster"]))


# --- against the database: fake rows in every upstream table, then the analysis stage, export,
# report and the notebook. The real pipeline's end-to-end run is tested on the demo's data.

N_CLUSTERS, PER_SCAN, SCANS = 4, 24, ("1-1-1", "1-1-2")


def _insert_fake_pipeline(modules) -> dict:
    """One trained model, alignment, clustering, embedding and insilico key over two scans."""
    recording, model, cl, ins = (
        modules[s] for s in ("recording", "model", "clustering", "insilico")
    )
    rng = np.random.default_rng(0)
    direct = dict(allow_direct_insert=True)
    for i, scan in enumerate(SCANS):
        recording.Scan.insert1(
            dict(
                scan_key=scan,
                animal_id=1,
                session=1,
                scan_idx=i + 1,
                n_neurons=PER_SCAN,
                n_trials=10,
                image_height=36,
                image_width=64,
                source="fake",
            )
        )
        recording.Scan.Neuron.insert(
            dict(
                scan_key=scan,
                unit_id=u + 1,
                neuron_idx=u,
                area="V1",
                layer="L2/3",
                motor_x=0.0,
                motor_y=0.0,
                motor_z=0.0,
            )
            for u in range(PER_SCAN)
        )
    key = dict(model.Dataset.add(list(SCANS)), **model.ModelConfig.add("cpu"))
    units = [dict(scan_key=s, unit_id=u + 1) for s in SCANS for u in range(PER_SCAN)]
    n = len(units)
    cluster = np.arange(n) % N_CLUSTERS
    model.TrainedModel.insert1(
        dict(
            key,
            architecture={},
            weights={},
            device="cpu",
            epochs=1,
            train_seconds=1.0,
            best_val_corr=0.3,
            test_corr=0.3,
            feve=0.3,
        ),
        **direct,
    )
    model.TrainedModel.Unit.insert(
        [
            dict(
                key,
                **u,
                test_corr=rng.uniform(0.1, 0.6),
                corr_to_avg=0.5,
                oracle_corr=0.7,
                feve=0.4,
                rf_x=rng.uniform(0, 64),
                rf_y=rng.uniform(0, 36),
            )
            for u in units
        ],
        **direct,
    )
    cl.Readout.insert1(dict(key, features=4, orientations=8), **direct)
    cl.Readout.Unit.insert(
        [
            dict(key, **u, barcode=rng.normal(size=(4, 8)).astype(np.float32), rf_x=1.0, rf_y=1.0)
            for u in units
        ],
        **direct,
    )
    key.update(cl.AlignmentParams.add())
    cl.Alignment.insert1(dict(key, temperature=10.0, beta=0.1, losses=np.zeros(3)), **direct)
    cl.Alignment.Unit.insert(
        [
            dict(key, **u, angle=float(i) / n, aligned=np.zeros((4, 8), np.float32))
            for i, u in enumerate(units)
        ],
        **direct,
    )
    cl.Embedding.insert1(dict(key, perplexity=5.0), **direct)
    cl.Embedding.Unit.insert(
        [
            dict(key, **u, x=float(c * 10 + rng.normal()), y=float(rng.normal()))
            for u, c in zip(units, cluster)
        ],
        **direct,
    )
    key.update(cl.ClusteringParams.add(n_clusters=N_CLUSTERS))
    cl.Clustering.insert1(
        dict(
            key,
            n_clusters=N_CLUSTERS,
            k_reason="n_clusters set in the config",
            centres=np.zeros((N_CLUSTERS, 4, 8), np.float32),
            heldout_k=np.arange(2, 6),
            heldout_ll=np.array([-3.0, -2.5, -2.4, -2.45]),
            heldout_se=np.array([0.1, 0.05, 0.0, 0.02]),
            stability=np.array([1.0, 0.95, 0.92, 0.7]),
            confusion=np.eye(N_CLUSTERS),
            block=np.array([0, 0, 1, 2]),
            block_order=np.arange(N_CLUSTERS),
        ),
        **direct,
    )
    cl.Clustering.Unit.insert(
        [dict(key, **u, cluster=int(c)) for u, c in zip(units, cluster)], **direct
    )

    ikey = {k: key[k] for k in ("dataset_hash", "model_hash")}
    ikey.update(ins.InSilicoParams.add())
    shift = rng.normal(size=(N_CLUSTERS, 9))
    idx = {name: shift[cluster, j] + 0.1 * rng.normal(size=n) for j, name in enumerate(pop.INDICES)}
    idx["phase_f1f0"] = 2 * idx["phase_index"]
    orient = rng.uniform(0, np.pi, n)
    ins.OptimalGabor.insert1(dict(ikey, pixels_per_degree=0.3), **direct)
    ins.OptimalGabor.Unit.insert(
        [
            dict(
                ikey,
                **u,
                x=32.0,
                y=18.0,
                size=4.0,
                sf=0.1,
                size_deg=4.0 / 0.3,
                sf_cpd=0.1 * 0.3,
                contrast=1.0,
                orientation=orient[i],
                phase=0.0,
                response=1.0,
            )
            for i, u in enumerate(units)
        ],
        **direct,
    )
    ins.OptimalDoG.insert1(ikey, **direct)
    ins.OptimalDoG.Unit.insert(
        [
            dict(
                ikey,
                **u,
                x=32.0,
                y=18.0,
                sigma_center=2.0,
                sigma_surround=4.0,
                sigma_center_deg=2.0 / 0.3,
                sigma_surround_deg=4.0 / 0.3,
                a_center=1.0,
                a_surround=0.5,
                response=1.0,
            )
            for u in units
        ],
        **direct,
    )
    ins.MEI.insert1(dict(ikey, norm=10.0), **direct)
    ins.MEI.Unit.insert(
        [
            dict(ikey, **u, image=rng.normal(size=(36, 64)).astype(np.float32), response=2.0)
            for u in units
        ],
        **direct,
    )
    batteries = (  # table, master coords, curve shape, index columns
        (
            ins.OrientationTuning,
            dict(orientations=np.linspace(0, np.pi, 8, endpoint=False)),
            (8,),
            ["orientation_index"],
        ),
        (
            ins.PhaseTuning,
            dict(phases=np.linspace(0, 2 * np.pi, 8, endpoint=False)),
            (8,),
            ["phase_index", "phase_f1f0"],
        ),
        (
            ins.SizeContrastTuning,
            dict(contrasts=np.array([0.5, 1.0, 2.0]), sizes=np.array([2.0, 4.0, 8.0, 16.0])),
            (3, 4),
            ["suppression_index", "contrast_index"],
        ),
        (
            ins.PlaidTuning,
            dict(
                optimal_contrasts=np.array([0.0, 1.0]),
                orthogonal_contrasts=np.array([0.0, 1.0, 2.0]),
            ),
            (2, 3),
            ["plaid_index"],
        ),
        (
            ins.StimulusComparison,
            dict(energies=np.array([4.0, 8.0, 16.0])),
            (3, 3),
            ["gabor_vs_dog", "gabor_vs_mei", "dog_vs_mei"],
        ),
    )
    for table, coords, shape, columns in batteries:
        table.insert1(dict(ikey, **{k: v.astype(np.float32) for k, v in coords.items()}), **direct)
        table.Unit.insert(
            [
                dict(
                    ikey,
                    **u,
                    curve=np.full(shape, i, np.float32),
                    **{c: float(idx[c][i]) for c in columns},
                )
                for i, u in enumerate(units)
            ],
            **direct,
        )
    mkey = {k: key[k] for k in ("dataset_hash", "model_hash")}
    ins.NonlinearityIndex.insert1(mkey, **direct)
    ins.NonlinearityIndex.Unit.insert(
        [
            dict(
                mkey,
                **u,
                cnn_corr=0.5,
                glm_corr=0.3,
                nonlinearity_index=float(idx["nonlinearity_index"][i]),
            )
            for i, u in enumerate(units)
        ],
        **direct,
    )
    return dict(
        key=dict(key, insilico_hash=ikey["insilico_hash"]),
        units=units,
        cluster=cluster,
        indices=idx,
        orientation=orient,
    )


@pytest.fixture(scope="module")
def fake_pipeline(db):
    import schemas

    extra = tuple(s for s in ("insilico", "analysis") if s not in schemas.STAGES)
    modules = dict(
        db, **schemas.activate(stages=extra)
    )  # prefix: $V1TWIN_SCHEMA_PREFIX, set by `db`
    try:
        yield modules, _insert_fake_pipeline(modules)
    finally:
        try:
            modules["recording"].Scan.delete(prompt=False, part_integrity="cascade")
            for stage in ("model", "clustering"):  # lookups left by the fake rows
                for name in ("ModelConfig", "Dataset", "AlignmentParams", "ClusteringParams"):
                    if hasattr(modules[stage], name):
                        getattr(modules[stage], name).delete(prompt=False, part_integrity="cascade")
        finally:
            for stage in reversed(extra):  # stages the db fixture does not drop
                modules[stage].schema.drop(prompt=False)


def test_several_matching_clusterings_warn_and_a_restriction_picks_one(fake_pipeline):
    from v1twin import export as ex

    modules, fake = fake_pipeline
    cl, key = modules["clustering"], fake["key"]
    row = (cl.Clustering & key).fetch1()
    other = cl.ClusteringParams.add(n_clusters=N_CLUSTERS + 1)
    cl.Clustering.insert1(dict(row, **other), allow_direct_insert=True)
    try:
        with pytest.warns(UserWarning, match="2 Clusterings match .* clustering_hash"):
            first = ex.resolve_key()
        assert first["clustering_hash"] == min(key["clustering_hash"], other["clustering_hash"])
        assert ex.resolve_key(other)["clustering_hash"] == other["clustering_hash"]
    finally:
        (cl.Clustering & other).delete(prompt=False, part_integrity="cascade")
        (cl.ClusteringParams & other).delete(prompt=False)


def test_db_population_analysis_export_and_report(fake_pipeline, tmp_path):
    import xarray as xr

    from v1twin import export as ex

    modules, fake = fake_pipeline
    analysis, key = modules["analysis"], fake["key"]
    analysis.PopulationAnalysis.populate()
    assert len(analysis.PopulationAnalysis & key) == 1
    assert len(analysis.PopulationAnalysis.ClusterKS & key) == N_CLUSTERS * len(pop.INDICES)
    assert len(analysis.PopulationAnalysis.ControlKS & key) == analysis.N_CONTROL
    n_pairs = len(pop.INDICES) * (len(pop.INDICES) - 1) // 2
    assert len(analysis.PopulationAnalysis.IndexCorrelation & key & {"subset": "all"}) == n_pairs
    code = pd.DataFrame((analysis.PopulationAnalysis.CombinatorialCode & key).to_dicts())
    assert len(code) == N_CLUSTERS

    neurons = ex.neuron_table()
    assert ex.resolve_key() == key
    assert ex.resolve_key({k: key[k] for k in ("clustering_hash", "insilico_hash")}) == key
    with pytest.raises(
        KeyError, match="no Clustering matches"
    ):  # another parameter set: not this one
        ex.resolve_key({"clustering_hash": "0" * 32})
    assert len(neurons) == len(fake["units"]) and neurons.notna().all().all()
    order = {(u["scan_key"], u["unit_id"]): i for i, u in enumerate(fake["units"])}
    pos = [order[(s, u)] for s, u in zip(neurons.scan, neurons.unit_id)]
    np.testing.assert_array_equal(neurons.cluster, fake["cluster"][pos])
    np.testing.assert_allclose(neurons.plaid_index, fake["indices"]["plaid_index"][pos], rtol=1e-5)
    np.testing.assert_allclose(neurons.preferred_orientation, fake["orientation"][pos], rtol=1e-5)
    # the stored code is the one of the fetched table
    expected = pop.combinatorial_code(neurons).set_index("cluster")
    stored = code.set_index("cluster").sort_index()
    assert (stored.gabor_like == expected.gabor_like).all() and (
        stored.combination == expected.combination
    ).all()

    paths = ex.export(tmp_path / "export")
    written = pd.read_csv(paths["neurons"])
    assert list(written.columns) == list(ex.NEURON_COLUMNS)
    np.testing.assert_allclose(written.gabor_size_deg, 4.0 / 0.3, rtol=1e-5)  # in degrees
    summary = json.loads(paths["clustering"].read_text())
    assert summary["n_clusters"] == N_CLUSTERS and "config" in summary["k_reason"]
    assert summary["stability"] == [1.0, 0.95, 0.92, 0.7]
    row = (analysis.PopulationAnalysis & key).fetch1()
    assert row["n_clusters"] == N_CLUSTERS and row["k_reason"] == summary["k_reason"]
    assert "block" in pd.read_csv(paths["clusters"]).columns
    with xr.open_dataset(paths["tuning_curves"], engine="h5netcdf") as ds:
        assert set(ds.data_vars) == {
            "orientation_tuning",
            "phase_tuning",
            "size_contrast_tuning",
            "plaid_tuning",
            "stimulus_comparison",
        }
        assert ds["plaid_tuning"].dims == ("neuron", "optimal_contrast", "orthogonal_contrast")
        np.testing.assert_array_equal(
            ds["orientation_tuning"].values[:, 0], np.array(pos, np.float32)
        )

    # through the CLI's subcommands, as `v1twin export/report` register them
    import argparse

    parser = argparse.ArgumentParser()
    ex.add_subcommands(parser.add_subparsers(dest="command"), ensure_database=lambda: None)
    args = parser.parse_args(
        [
            "export",
            "--out",
            str(tmp_path / "cli"),
            "--where",
            f"clustering_hash={key['clustering_hash']}",
        ]
    )
    assert args.func(args) == 0 and (tmp_path / "cli" / "tuning_curves.nc").exists()

    written = ex.report(tmp_path / "report")
    assert "cluster_meis" not in written  # no ClusterMEI table: skipped, not an error
    for name in set(written) - {"index"}:
        _assert_png(written[name])
    assert {"neuron_meis", "tuning_examples", "combinatorial_code", "tsne_indices"} <= set(written)


def test_notebook_runs_headless(fake_pipeline):
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient

    root = Path(__file__).resolve().parents[1]
    nb = nbformat.read(root / "notebooks" / "explore_clusters.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(root)}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 8
