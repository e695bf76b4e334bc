"""Fetch per-neuron and per-cluster results from the database and write them out.

    v1twin export --out DIR     neurons.csv, clusters.csv, tuning_curves.nc, clustering.json,
                                reliability.csv, index_correlations.csv, battery.csv
    v1twin report --out DIR     the figures of v1twin.report as PNGs, with index.html

neurons.csv holds two phase indices: ``phase_index`` = |F1|/F0 as DT Eq. 11 writes it (a
half-wave rectified simple cell scores pi/4) and ``phase_f1f0`` = 2|F1|/F0, the textbook
modulation ratio (pi/2 for that cell; > 1 = simple). ``orientation_index`` (F2/F0 of Eq. 11) is
1 - circular variance, the conventional global orientation selectivity, with no factor 2.
Those indices are measured at each neuron's own optimal Gabor. battery.csv holds the battery's
indices at both Gabors, one row per neuron and ``gabor_source``: 'neuron' (the neuron's own
optimal Gabor; the values of neurons.csv) or 'cluster' (its cluster's optimal Gabor: the shared
size, sf, contrast and phase at the neuron's own RF and orientation, as DT runs the battery per
cluster).

A *restriction* (dict) picks what to export; attributes it names that a table lacks are ignored.
:func:`resolve_key` turns it into one full key: the first ``Clustering`` that matches (ordered by
its key; a warning names the attributes to restrict on when several match) and the first
``insilico_hash`` with tuning results for that model; where the matching Clusterings are those of
twins that differ only in their seed (``[model] n_seeds``), the lowest seed's, with a warning
that says so (the reliabilities across the seeds go to reliability.csv). Where no Clustering
matches, the first trained model with in-silico results and no clustering (an imported model
whose readout gives no bar codes, ``v1twin import model``): its neurons.csv has cluster -1 and
no alignment angle, and there is no clusters.csv or clustering.json. Call
``schemas.activate()`` first (the CLI does).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

#: neurons.csv columns (the same as schemas.analysis.NEURON_COLUMNS; a test holds them equal).
NEURON_COLUMNS = (
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
)
#: (Dataset variable, tuning table, {master coordinate attribute: dim}); curve dims follow `neuron`.
CURVES = (
    ("orientation_tuning", "OrientationTuning", {"orientations": "orientation"}),
    ("phase_tuning", "PhaseTuning", {"phases": "phase"}),
    ("size_contrast_tuning", "SizeContrastTuning", {"contrasts": "contrast", "sizes": "size"}),
    (
        "plaid_tuning",
        "PlaidTuning",
        {"optimal_contrasts": "optimal_contrast", "orthogonal_contrasts": "orthogonal_contrast"},
    ),
    ("stimulus_comparison", "StimulusComparison", {"energies": "energy"}),
)
STIMULI = ("gabor", "dog", "mei")  # rows of StimulusComparison.Unit.curve


def _modules():
    """(schemas.analysis, schemas.clustering, schemas.insilico): imported on use, so that
    registering the CLI's subcommands does not import torch."""
    from schemas import analysis, clustering, insilico

    return analysis, clustering, insilico


def parse_restriction(items) -> dict:
    """``["clustering_hash=ab12...", "insilico_hash=..."]`` (the CLI's ``--where``) -> dict;
    integer-looking values become ints."""
    out = {}
    for item in items or ():
        name, sep, value = str(item).partition("=")
        if not sep or not name.strip():
            raise KeyError(f"--where {item!r}: expected ATTRIBUTE=VALUE")
        value = value.strip()
        out[name.strip()] = int(value) if value.lstrip("-").isdigit() else value
    return out


def resolve_key(restriction: dict | None = None) -> dict:
    """One Clustering key (+ ``insilico_hash`` where tuning results exist) matching
    `restriction`."""
    an, clustering, insilico = _modules()
    restriction = dict(restriction or {})
    known = set(clustering.Clustering.heading.names) | {"insilico_hash", "seedset_hash"}
    unknown = sorted(set(restriction) - known)
    if unknown:
        raise KeyError(f"--where: unknown attributes {unknown}; known: {sorted(known)}")
    keys = an._restrict(clustering.Clustering, restriction).keys(order_by="KEY")
    if not keys:
        return _unclustered_key(restriction)
    key = dict(keys[0])
    if len(keys) > 1:
        differ = sorted(k for k in key if any(other[k] != key[k] for other in keys))
        seeds = _seeds(keys) if differ == ["model_hash"] else None
        if seeds:  # the twins of several seeds: the first seed's, and say so
            key = dict(min(keys, key=lambda k: seeds[k["model_hash"]]))
            which = (
                f"twins of seeds {sorted(seeds.values())}; taking seed "
                f"{seeds[key['model_hash']]}'s (model_hash={key['model_hash']}); the "
                "reliabilities across the seeds are in reliability.csv"
            )
        else:
            which = f"taking the first ({', '.join(f'{k}={key[k]}' for k in differ)})"
        warnings.warn(
            f"{len(keys)} Clusterings match {restriction or 'the database'}: {which}. Choose one "
            f"with --where (a restriction) on {', '.join(differ)}.",
            stacklevel=2,
        )
    if "seedset_hash" in restriction:
        key["seedset_hash"] = restriction["seedset_hash"]
    return _with_insilico(key, restriction)


def _with_insilico(key: dict, restriction: dict) -> dict:
    """``key`` with the first ``insilico_hash`` that has tuning results for its model."""
    an, clustering, insilico = _modules()
    if an.available(insilico.OptimalGabor):
        model_key = {k: v for k, v in key.items() if k in ("dataset_hash", "model_hash")}
        if "insilico_hash" in restriction:
            model_key["insilico_hash"] = restriction["insilico_hash"]
        for table in (
            insilico.StimulusComparison,
            insilico.OrientationTuning,
            insilico.OptimalGabor,
        ):
            found = (table & model_key).keys(order_by="KEY")
            if found:
                key["insilico_hash"] = found[0]["insilico_hash"]
                break
    return key


def _unclustered_key(restriction: dict) -> dict:
    """The key of the first trained model matching ``restriction`` that has in-silico results
    but no clustering (an imported model whose readout gives no bar codes)."""
    an, clustering, insilico = _modules()
    from schemas import model

    found = []
    if an.available(insilico.OptimalGabor):
        names = ("dataset_hash", "model_hash", "insilico_hash")
        rows = an._restrict(insilico.OptimalGabor, restriction)
        found = (rows.proj() - clustering.Clustering.proj()).keys(order_by="KEY")
        found = [{k: r[k] for k in names[:2]} for r in found]
    if not found:
        raise KeyError(
            f"no Clustering matches {restriction or 'the database'}, nor a trained model with "
            "in-silico results and no clustering: populate the clustering (or insilico) stage "
            "first"
        )
    key = dict(found[0])
    if any(f != key for f in found):
        warnings.warn(
            f"several unclustered models match {restriction or 'the database'}: taking "
            f"model_hash={key['model_hash']}. Choose one with --where model_hash=...",
            stacklevel=3,
        )
    if not (model.TrainedModel & key):
        raise KeyError(f"no trained model {key}")
    return _with_insilico(key, restriction)


def _seeds(keys: list[dict]) -> dict[str, int] | None:
    """{model_hash: training seed} when the keys' models differ only in their seed, else None."""
    from schemas import model

    configs = dict(
        zip(
            *(model.ModelConfig & [{"model_hash": k["model_hash"]} for k in keys]).to_arrays(
                "model_hash", "config"
            )
        )
    )
    if any("train" not in c for c in configs.values()):  # an imported model has no seed
        return None
    seeds = {h: c["train"]["seed"] for h, c in configs.items()}
    unseeded = [{**c, "train": {**c["train"], "seed": None}} for c in configs.values()]
    return seeds if all(c == unseeded[0] for c in unseeded) else None


def neuron_table(restriction: dict | None = None) -> pd.DataFrame:
    """One row per neuron of the chosen clustering: :data:`NEURON_COLUMNS` + ``tsne_x, tsne_y``."""
    an, clustering, insilico = _modules()
    return an.fetch_neurons(resolve_key(restriction))


def clustering_arrays(restriction: dict | None = None) -> dict:
    """The Clustering row's held-out curve, confusion matrix and blocks (see v1twin.report)."""
    an, clustering, insilico = _modules()
    key = resolve_key(restriction)
    row = (clustering.Clustering & key).fetch1()
    out = {
        k: np.asarray(row[k])
        for k in (
            "heldout_k",
            "heldout_ll",
            "heldout_se",
            "stability",
            "confusion",
            "block",
            "block_order",
        )
    }
    out["n_clusters"] = int(row["n_clusters"])
    out["k_reason"] = row["k_reason"]
    return out


def cluster_table(neurons: pd.DataFrame, arrays: dict | None = None) -> pd.DataFrame:
    """clusters.csv: size, mean indices, KS counts, combinatorial code and (given the
    clustering arrays) the block of each cluster in the confusion matrix."""
    from insilico import population as pop

    table = pop.cluster_table(neurons, [i for i in pop.INDICES if neurons[i].notna().any()])
    if arrays is not None and arrays.get("block") is not None:
        block = np.asarray(arrays["block"])
        table["block"] = [int(block[c]) if 0 <= c < len(block) else -1 for c in table["cluster"]]
    return table


def tuning_curves(neurons: pd.DataFrame, key: dict):
    """xarray Dataset of every tuning curve of the neurons (dim ``neuron`` in `neurons` order,
    coords scan, unit_id, cluster); experiments not yet populated are left out."""
    an, clustering, insilico = _modules()
    import xarray as xr

    n = len(neurons)
    coords = dict(
        scan=("neuron", neurons["scan"].astype(str).to_numpy()),
        unit_id=("neuron", neurons["unit_id"].to_numpy(np.int64)),
        cluster=("neuron", neurons["cluster"].to_numpy(np.int64)),
    )
    position = {(s, int(u)): i for i, (s, u) in enumerate(zip(neurons["scan"], neurons["unit_id"]))}
    data = {}
    for var, name, master_coords in CURVES:
        table = getattr(insilico, name, None)
        if "insilico_hash" not in key or not an.available(table):
            continue
        master = an._restrict(table, key)
        if len(master) != 1:
            continue
        axes = (
            master.fetch1(*master_coords)
            if len(master_coords) > 1
            else (master.fetch1(*master_coords),)
        )
        dims = list(master_coords.values())
        if var == "stimulus_comparison":
            dims = ["stimulus", *dims]
            axes = (np.array(STIMULI), *axes)
        shape = tuple(len(a) for a in axes)
        values = np.full((n, *shape), np.nan, np.float32)
        scans, units, curves = an._restrict(table.Unit, key).to_arrays(
            "scan_key", "unit_id", "curve"
        )
        for s, u, c in zip(scans, units, curves):
            i = position.get((str(s), int(u)))
            if i is not None:
                values[i] = np.asarray(c, np.float32).reshape(shape)
        data[var] = xr.DataArray(
            values, dims=("neuron", *dims), coords={d: np.asarray(a) for d, a in zip(dims, axes)}
        )
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update({k: str(v) for k, v in key.items()})
    return ds


def write_export(
    out_dir,
    neurons: pd.DataFrame,
    clusters: pd.DataFrame | None = None,
    curves=None,
    arrays: dict | None = None,
    reliability: pd.DataFrame | None = None,
    correlations: pd.DataFrame | None = None,
    battery: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """Write neurons.csv (exactly :data:`NEURON_COLUMNS`; the optimal Gabor's size and spatial
    frequency in degrees), clusters.csv, tuning_curves.nc and, given the clustering arrays,
    clustering.json (the number of clusters, why it was chosen, and the held-out curve); given
    them, reliability.csv (each index's ICC(3,1) and split-half reliability across seeds; empty:
    unknown) and index_correlations.csv (raw and corrected for attenuation); given it, battery.csv
    (the battery's indices at each neuron's and at its cluster's optimal Gabor, ``gabor_source``
    'neuron' / 'cluster')."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    missing = [c for c in NEURON_COLUMNS if c not in neurons.columns]
    if missing:
        raise KeyError(f"neurons table lacks columns {missing}")
    paths = {"neurons": out / "neurons.csv"}
    neurons[list(NEURON_COLUMNS)].to_csv(paths["neurons"], index=False)
    if (neurons["cluster"] >= 0).any():  # all -1: a model without clustering, no clusters.csv
        clusters = cluster_table(neurons) if clusters is None else clusters
        paths["clusters"] = out / "clusters.csv"
        clusters.to_csv(paths["clusters"], index=False)
    if curves is not None:
        paths["tuning_curves"] = out / "tuning_curves.nc"
        curves.to_netcdf(paths["tuning_curves"], engine="h5netcdf")
    if arrays is not None:
        paths["clustering"] = out / "clustering.json"
        paths["clustering"].write_text(json.dumps(_k_summary(arrays), indent=1))
    frames = (
        ("reliability", reliability),
        ("index_correlations", correlations),
        ("battery", battery),
    )
    for name, frame in frames:
        if frame is not None:
            paths[name] = out / f"{name}.csv"
            frame.to_csv(paths[name], index=False)
    return paths


def _k_summary(arrays: dict) -> dict:
    """The chosen number of clusters, the reason, the held-out likelihood curve and the
    stability of each k (JSON)."""
    curve = ("heldout_k", "heldout_ll", "heldout_se", "stability")
    return {
        "n_clusters": int(arrays["n_clusters"]),
        "k_reason": str(arrays["k_reason"]),
        **{k: np.asarray(arrays[k]).tolist() for k in curve if k in arrays},
    }


def export(out_dir, restriction: dict | None = None) -> dict[str, Path]:
    """neurons.csv, clusters.csv and tuning_curves.nc of one clustering (see
    :func:`resolve_key`)."""
    an, clustering, insilico = _modules()
    key = resolve_key(restriction)
    neurons = an.fetch_neurons(key)
    clustered = "clustering_hash" in key
    arrays = clustering_arrays(key) if clustered else None
    clusters = cluster_table(neurons, arrays) if clustered else None
    correlations = (
        an.corrected_correlations(key)
        if an.available(an.PopulationAnalysis) and len(an._restrict(an.PopulationAnalysis, key))
        else None
    )
    return write_export(
        out_dir,
        neurons,
        clusters,
        tuning_curves(neurons, key),
        arrays,
        reliability=an.reliability(key),
        correlations=correlations,
        battery=an.fetch_battery(key),
    )


def neuron_meis(neurons: pd.DataFrame, key: dict, n: int = 4) -> dict:
    """{cluster: [(label, image (H, W))]} MEIs of the `n` best-predicted neurons per cluster."""
    an, clustering, insilico = _modules()
    from . import report as rp

    if "insilico_hash" not in key or not an.available(insilico.MEI):
        return {}
    best = rp.best_predicted(neurons, n)
    wanted = [dict(scan_key=r.scan, unit_id=int(r.unit_id)) for r in best.itertuples()]
    rows = (an._restrict(insilico.MEI.Unit, key) & wanted).to_dicts()
    images = {(r["scan_key"], int(r["unit_id"])): np.asarray(r["image"]) for r in rows}
    out = {}
    for r in best.itertuples():
        image = images.get((r.scan, int(r.unit_id)))
        if image is not None:
            out.setdefault(int(r.cluster), []).append((f"#{r.unit_id} r={r.test_corr:.2f}", image))
    return out


def cluster_meis(key: dict) -> dict:
    """{cluster: image (H, W)} from a ClusterMEI table if one exists and has rows, else {}.

    Looks for a ``cluster`` and an ``image`` attribute in ClusterMEI or one of its parts, so that
    it keeps working whichever way that table is declared.
    """
    an, clustering, insilico = _modules()
    table = getattr(insilico, "ClusterMEI", None)
    if not an.available(table):
        return {}
    candidates = [table] + [
        getattr(table, a)
        for a in dir(table)
        if a[:1].isupper()
        and isinstance(getattr(table, a), type)
        and hasattr(getattr(table, a), "definition")
    ]
    for t in candidates:
        try:
            t = an._instance(t)
            names = set(t.heading.names)
            if {"cluster", "image"} <= names:
                clusters, images = an._restrict(t, key).to_arrays("cluster", "image")
                return {int(c): np.squeeze(np.asarray(im)) for c, im in zip(clusters, images)}
        except Exception:  # a part we cannot read: no cluster MEIs rather than no report
            continue
    return {}


def report_inputs(restriction: dict | None = None) -> dict:
    """Everything :func:`v1twin.report.write_report` draws, fetched for one clustering."""
    an, clustering, insilico = _modules()
    key = resolve_key(restriction)
    neurons = an.fetch_neurons(key)
    return dict(
        neurons=neurons,
        clustering=clustering_arrays(key),
        curves=tuning_curves(neurons, key),
        meis=neuron_meis(neurons, key),
        cluster_meis=cluster_meis(key),
        reliability=an.reliability(key),
        battery=an.fetch_battery(key),
    )


def report(out_dir, restriction: dict | None = None) -> dict[str, Path]:
    """``v1twin report``: the figures and index.html of one clustering."""
    from . import report as rp

    key = resolve_key(restriction)
    title = "v1twin report: " + ", ".join(f"{k}={str(v)[:8]}" for k, v in key.items())
    return rp.write_report(out_dir, title=title, **report_inputs(key))


def add_subcommands(sub, ensure_database) -> None:
    """Register ``v1twin export`` and ``v1twin report`` on the CLI's subparsers.

    `ensure_database`: the CLI's function that starts the local server unless DJ_HOST is set.
    """

    def run(what):
        def command(args) -> int:
            import schemas

            ensure_database()
            schemas.activate()
            restriction = parse_restriction(args.where)
            paths = (export if what == "export" else report)(args.out, restriction)
            for name, path in paths.items():
                print(f"{name:20} {path}")
            return 0

        return command

    for name, helptext in (
        ("export", "write neurons.csv, clusters.csv and tuning_curves.nc of a clustering"),
        ("report", "write the population figures (PNG) and index.html of a clustering"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--out", required=True, type=Path, help="output folder (created)")
        p.add_argument(
            "--where",
            action="append",
            default=[],
            metavar="ATTR=VALUE",
            help="restrict the clustering / insilico key, e.g. clustering_hash=...; "
            "repeatable; default: the first Clustering",
        )
        p.set_defaults(func=run(name))
