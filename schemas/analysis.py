"""Population statistics of the tuning indices over the functional clusters (DT Fig. 3-4).

``PopulationAnalysis`` depends on a ``Clustering`` and on every in-silico table that holds an
index (same trained model; one ``InSilicoParams``), so its ``make`` has all indices. It fetches one
row per neuron (:func:`fetch_neurons`), calls :mod:`insilico.population`, and inserts: KS tests
per cluster and index, the random-assignment control, correlations between cluster-mean
indices (all clusters and Gabor-like clusters) and the combinatorial code.

``IndexReliability`` holds each index's reliability across twins trained with different seeds
(``model.SeedSet``); :func:`reliability` and :func:`corrected_correlations` fetch it and the
correlations corrected for attenuation by it (:mod:`insilico.reliability`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from insilico import population as pop
from insilico import reliability as rel

from . import clustering, dj, insilico, model, new_schema  # noqa: F401

schema = new_schema()

N_CONTROL = 10  # random cluster assignments in the control

#: Columns of :func:`fetch_neurons` (and of ``v1twin export``'s neurons.csv), in order.
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
    *pop.INDICES,
    "phase_f1f0",  # 2 x phase_index: the textbook F1/F0 (see insilico.indices.phase_f1f0)
)

# (table, {column in the table: column of the neurons frame}), left-joined onto Clustering.Unit
_SOURCES = (
    (
        "model.TrainedModel.Unit",
        {
            "test_corr": "test_corr",
            "oracle_corr": "oracle_corr",
            "feve": "feve",
            "rf_x": "rf_x",
            "rf_y": "rf_y",
        },
    ),
    ("clustering.Alignment.Unit", {"angle": "alignment_angle"}),
    (
        "insilico.OptimalGabor.Unit",
        {
            "orientation": "preferred_orientation",
            "size_deg": "gabor_size_deg",
            "sf_cpd": "gabor_sf_cpd",
        },
    ),
    ("insilico.OrientationTuning.Unit", {"orientation_index": "orientation_index"}),
    ("insilico.PhaseTuning.Unit", {"phase_index": "phase_index", "phase_f1f0": "phase_f1f0"}),
    (
        "insilico.SizeContrastTuning.Unit",
        {"suppression_index": "suppression_index", "contrast_index": "contrast_index"},
    ),
    ("insilico.PlaidTuning.Unit", {"plaid_index": "plaid_index"}),
    (
        "insilico.StimulusComparison.Unit",
        {
            "gabor_vs_dog": "gabor_vs_dog",
            "gabor_vs_mei": "gabor_vs_mei",
            "dog_vs_mei": "dog_vs_mei",
        },
    ),
    ("insilico.NonlinearityIndex.Unit", {"nonlinearity_index": "nonlinearity_index"}),
    ("clustering.Embedding.Unit", {"x": "tsne_x", "y": "tsne_y"}),
)


def _table(name: str):
    module, *path = name.split(".")
    obj = globals()[module]
    for part in path:
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _instance(table):
    return table() if isinstance(table, type) else table


def available(table) -> bool:
    """Whether `table` exists in the database (its stage activated and declared)."""
    try:
        return table is not None and bool(_instance(table).is_declared)
    except Exception:  # an unactivated schema raises on any access
        return False


def _restrict(table, key: dict):
    """`table` restricted by the attributes of `key` that it has (others are ignored); a list
    value matches any of its items (several seeds' model_hash)."""
    from . import any_of

    table = _instance(table)
    names = set(table.heading.names)
    return table & any_of({k: v for k, v in key.items() if k in names})


def _fetch(table, key: dict, columns: dict) -> pd.DataFrame:
    """Rows of a per-neuron part table as (scan, unit_id, renamed columns); empty if the
    table is not declared (its stage not activated)."""
    out_cols = ["scan", "unit_id", *columns.values()]
    if not available(table):
        return pd.DataFrame(columns=out_cols)
    arrays = _restrict(table, key).to_arrays("scan_key", "unit_id", *columns)
    frame = pd.DataFrame(dict(zip(out_cols, arrays)))
    if frame.duplicated(["scan", "unit_id"]).any():
        raise ValueError(
            f"{table.__class__.__name__} restricted by {key} has several rows per neuron: "
            "the key must name one trained model, alignment, clustering and insilico_hash"
        )
    return frame


def fetch_neurons(key: dict) -> pd.DataFrame:
    """One row per neuron of a clustering: :data:`NEURON_COLUMNS` plus ``tsne_x, tsne_y``.

    `key` names one ``Clustering`` (dataset, model, alignment, clustering hashes) and, for the
    indices, one ``insilico_hash``; tables not yet populated leave their columns NaN. Neurons are
    ordered by (scan, unit_id). A key without ``clustering_hash`` names one trained model that
    has no clustering (an imported model without bar codes): every neuron of it, cluster -1.
    """
    if "clustering_hash" in key:
        base = _fetch(clustering.Clustering.Unit, key, {"cluster": "cluster"})
    else:
        base = _fetch(model.TrainedModel.Unit, key, {})
        base["cluster"] = -1
    if base.empty:
        raise KeyError(f"no clustered neurons for {key}")
    if base.duplicated(["scan", "unit_id"]).any():
        raise ValueError(f"{key} names several clusterings; restrict it to one Clustering key")
    frame = base
    for name, columns in _SOURCES:
        frame = frame.merge(_fetch(_table(name), key, columns), on=["scan", "unit_id"], how="left")
    frame["unit_id"] = frame["unit_id"].astype(np.int64)
    frame["cluster"] = frame["cluster"].astype(np.int64)
    float_cols = [c for c in frame.columns if c not in ("scan", "unit_id", "cluster")]
    frame[float_cols] = frame[float_cols].astype(float)
    frame = frame[[*NEURON_COLUMNS, "tsne_x", "tsne_y"]]
    return frame.sort_values(["scan", "unit_id"], ignore_index=True)


#: battery.csv's index columns (the per-neuron battery's, meaning the same at either Gabor)
BATTERY_INDICES = (
    "orientation_index",
    "phase_index",
    "phase_f1f0",
    "suppression_index",
    "contrast_index",
    "plaid_index",
)


def fetch_battery(key: dict) -> pd.DataFrame:
    """The tuning battery's indices at both optimal Gabors, long format: one row per neuron and
    ``gabor_source`` ('neuron': each neuron's own optimal Gabor, the indices of neurons.csv;
    'cluster': its cluster's optimal Gabor, DT's per-cluster battery), columns scan, unit_id,
    cluster, gabor_source, :data:`BATTERY_INDICES`; tables not populated leave NaN. Ordered by
    (gabor_source, scan, unit_id)."""
    base = _fetch(clustering.Clustering.Unit, key, {"cluster": "cluster"})
    frames = []
    for source, tables in (("neuron", 0), ("cluster", 1)):
        frame = base.copy()
        for pair in insilico.BATTERY_PAIRS:
            table = pair[tables]
            columns = {c: c for c in table.indices}
            frame = frame.merge(
                _fetch(table.Unit, key, columns), on=["scan", "unit_id"], how="left"
            )
        frame.insert(3, "gabor_source", source)
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    out["unit_id"] = out["unit_id"].astype(np.int64)
    out["cluster"] = out["cluster"].astype(np.int64)
    out[list(BATTERY_INDICES)] = out[list(BATTERY_INDICES)].astype(float)
    out = out[["scan", "unit_id", "cluster", "gabor_source", *BATTERY_INDICES]]
    return out.sort_values(
        ["gabor_source", "scan", "unit_id"], ignore_index=True, key=_source_order
    )


def _source_order(column: pd.Series) -> pd.Series:
    return column.map({"neuron": 0, "cluster": 1}) if column.name == "gabor_source" else column


def _none_if_nan(x):
    x = float(x)
    return None if not np.isfinite(x) else x


@schema
class PopulationAnalysis(dj.Computed):
    definition = """
    # KS tests per cluster, the random-assignment control, index correlations, combinatorial code
    -> clustering.Clustering
    -> insilico.OrientationTuning
    -> insilico.PhaseTuning
    -> insilico.SizeContrastTuning
    -> insilico.PlaidTuning
    -> insilico.StimulusComparison
    -> insilico.NonlinearityIndex
    ---
    n_neurons       : int32
    n_clusters      : int32
    k_reason        : varchar(255)  # why this k (Clustering.k_reason)
    alpha           : float64       # KS significance level
    n_any           : int32         # clusters differing from the population on >= 1 index
    n_all           : int32         # ... on every index
    control_n_any   : float64       # mean over random cluster assignments
    control_n_all   : float64
    thresholds      : json          # population mean of each index (binarisation thresholds)
    """

    class ClusterKS(dj.Part):
        definition = """
        # two-sided KS test of a cluster's index values against the whole population
        -> master
        cluster         : int32
        index_name      : varchar(32)
        ---
        n_neurons       : int32         # neurons of the cluster with a finite value
        ks_statistic = null : float64
        p_value = null  : float64
        significant     : bool          # p_value < alpha
        """

    class ControlKS(dj.Part):
        definition = """
        # the same counts for one random cluster assignment (labels permuted, sizes kept)
        -> master
        repeat          : int32
        ---
        n_significant   : int32         # significant (cluster, index) tests
        n_any           : int32
        n_all           : int32
        """

    class IndexCorrelation(dj.Part):
        definition = """
        # correlation between cluster-mean indices over clusters (DT Fig. 4A)
        -> master
        subset          : enum('all', 'gabor_like')
        index_a         : varchar(32)
        index_b         : varchar(32)
        ---
        n_clusters      : int32
        spearman_r = null : float64
        spearman_p = null : float64
        pearson_r = null  : float64
        pearson_p = null  : float64
        """

    class CombinatorialCode(dj.Part):
        definition = """
        # a cluster's binarised phase, suppression and plaid tuning (DT Fig. 4B-C)
        -> master
        cluster         : int32
        ---
        n_neurons       : int32
        gabor_like      : bool          # mean gabor_vs_mei above the population average
        phase_high      : bool
        suppression_high : bool
        plaid_high      : bool
        combination     : varchar(64)   # e.g. 'phase+plaid', 'none'
        """

    def make(self, key):
        neurons = fetch_neurons(key)
        ks = pop.cluster_ks(neurons, pop.INDICES, alpha=pop.ALPHA)
        summary = pop.ks_summary(ks)
        control = pop.control_ks(neurons, pop.INDICES, alpha=pop.ALPHA, n_repeats=N_CONTROL, seed=0)
        code = pop.combinatorial_code(neurons)
        means = pop.cluster_means(neurons, pop.INDICES)
        gabor_like = code.loc[code["gabor_like"], "cluster"].tolist()
        thresholds = {k: _none_if_nan(v) for k, v in pop.population_thresholds(neurons).items()}
        self.insert1(
            dict(
                key,
                n_neurons=len(neurons),
                n_clusters=summary["n_clusters"],
                k_reason=(clustering.Clustering & key).fetch1("k_reason"),
                alpha=pop.ALPHA,
                n_any=summary["n_any"],
                n_all=summary["n_all"],
                control_n_any=float(control["n_any"].mean()),
                control_n_all=float(control["n_all"].mean()),
                thresholds=thresholds,
            )
        )
        self.ClusterKS.insert(
            dict(
                key,
                cluster=int(r.cluster),
                index_name=r.index_name,
                n_neurons=int(r.n_neurons),
                ks_statistic=_none_if_nan(r.statistic),
                p_value=_none_if_nan(r.p_value),
                significant=bool(r.significant),
            )
            for r in ks.itertuples()
        )
        self.ControlKS.insert(
            dict(
                key,
                repeat=int(r.repeat),
                n_significant=int(r.n_significant),
                n_any=int(r.n_any),
                n_all=int(r.n_all),
            )
            for r in control.itertuples()
        )
        for subset, clusters in (("all", None), ("gabor_like", gabor_like)):
            corr = pop.index_correlations(means, pop.INDICES, clusters=clusters)
            self.IndexCorrelation.insert(
                dict(
                    key,
                    subset=subset,
                    index_a=r.index_a,
                    index_b=r.index_b,
                    n_clusters=int(r.n),
                    **{
                        c: _none_if_nan(getattr(r, c))
                        for c in ("spearman_r", "spearman_p", "pearson_r", "pearson_p")
                    },
                )
                for r in corr.itertuples()
            )
        self.CombinatorialCode.insert(
            dict(
                key,
                cluster=int(r.cluster),
                n_neurons=int(r.n_neurons),
                gabor_like=bool(r.gabor_like),
                phase_high=bool(r.phase_high),
                suppression_high=bool(r.suppression_high),
                plaid_high=bool(r.plaid_high),
                combination=r.combination,
            )
            for r in code.itertuples()
        )


#: Indices whose across-seed reliability is stored: every index of neurons.csv.
RELIABILITY_INDICES = (*pop.INDICES, "phase_f1f0")
_INDEX_SOURCES = [(n, c) for n, c in _SOURCES if set(c.values()) & set(RELIABILITY_INDICES)]
_INDEX_TABLES = (
    "OrientationTuning",
    "PhaseTuning",
    "SizeContrastTuning",
    "PlaidTuning",
    "StimulusComparison",
)


def _model_indices(key: dict) -> pd.DataFrame:
    """(scan, unit_id, each of RELIABILITY_INDICES) of one trained model (``key`` names its
    dataset_hash, model_hash and insilico_hash)."""
    frame = None
    for name, columns in _INDEX_SOURCES:
        part = _fetch(_table(name), key, columns)
        frame = part if frame is None else frame.merge(part, on=["scan", "unit_id"], how="outer")
    return frame


@schema
class IndexReliability(dj.Computed):
    definition = """
    # each index's reliability across the twins of a seed set (model.SeedSet), over neurons
    -> model.Dataset
    -> model.SeedSet
    -> insilico.InSilicoParams
    """

    class Index(dj.Part):
        definition = """
        -> master
        index_name      : varchar(32)
        ---
        n_neurons       : int32         # neurons with a finite value for every seed
        icc = null      : float64       # ICC(3,1), consistency, one seed; NULL: unknown (1 seed)
        split_half = null : float64     # Spearman-Brown, mean of all seeds; NULL: unknown
        """

    @property
    def key_source(self):
        """Seed sets every member of which has every index table populated."""
        ins = insilico
        base = (model.Dataset * model.SeedSet * ins.InSilicoParams).proj()
        needed = (model.Dataset * model.SeedSet.Member * ins.InSilicoParams).proj()
        have = ins.NonlinearityIndex.proj()
        for name in _INDEX_TABLES:
            have = have * getattr(ins, name).proj()
        return base - (needed - have).proj()

    def make(self, key):
        members = (model.SeedSet.Member & key).to_dicts(order_by="seed")
        per_seed = [_model_indices(dict(key, model_hash=m["model_hash"])) for m in members]
        table = per_seed[0][["scan", "unit_id"]]
        for i, frame in enumerate(per_seed):
            renamed = frame.rename(columns={c: f"{c}@{i}" for c in RELIABILITY_INDICES})
            table = table.merge(renamed, on=["scan", "unit_id"], how="inner")
        self.insert1(key)
        rows = []
        for index in RELIABILITY_INDICES:
            values = table[[f"{index}@{i}" for i in range(len(members))]].to_numpy(float)
            rows.append(
                dict(
                    key,
                    index_name=index,
                    n_neurons=len(rel.finite_rows(values)),
                    icc=_none_if_nan(rel.icc(values)),
                    split_half=_none_if_nan(rel.split_half(values)),
                )
            )
        self.Index.insert(rows)


def reliability(key: dict) -> pd.DataFrame:
    """The stored reliabilities for the trained model of ``key`` (dataset_hash, model_hash,
    insilico_hash; a seedset_hash picks the seed set, else the one with most seeds that has
    them): ``index_name, n_neurons, n_seeds, icc, split_half`` (NaN: unknown), one row per
    index of :data:`RELIABILITY_INDICES`; all NaN when none is stored."""
    columns = ["index_name", "n_neurons", "n_seeds", "icc", "split_half"]
    empty = pd.DataFrame({"index_name": list(RELIABILITY_INDICES)})
    if not available(IndexReliability):
        return empty.reindex(columns=columns)
    names = ("dataset_hash", "model_hash", "insilico_hash", "seedset_hash")
    found = IndexReliability * model.SeedSet * model.SeedSet.Member & {
        k: key[k] for k in names if k in key
    }
    sets = found.to_dicts(order_by=("n_seeds DESC", "seedset_hash"))
    if not sets:
        return empty.reindex(columns=columns)
    chosen = IndexReliability.Index * model.SeedSet & {
        k: sets[0][k] for k in ("dataset_hash", "seedset_hash", "insilico_hash")
    }
    frame = pd.DataFrame(chosen.to_dicts())[columns]
    frame[["icc", "split_half"]] = frame[["icc", "split_half"]].astype(float)
    return empty.merge(frame, on="index_name", how="left")


def corrected_correlations(key: dict) -> pd.DataFrame:
    """PopulationAnalysis.IndexCorrelation of ``key`` (one PopulationAnalysis) with the
    reliabilities (ICC) of both indices and the correlations corrected for attenuation
    (``spearman_r_corrected``, ``pearson_r_corrected``; NaN where a reliability is unknown)."""
    names = PopulationAnalysis.IndexCorrelation.heading.names
    rows = _restrict(PopulationAnalysis.IndexCorrelation, key).to_dicts(
        order_by=("subset", "index_a", "index_b")
    )
    frame = pd.DataFrame(rows, columns=names)[
        ["subset", "index_a", "index_b", "n_clusters", "spearman_r", "pearson_r"]
    ]
    frame[["spearman_r", "pearson_r"]] = frame[["spearman_r", "pearson_r"]].astype(float)
    icc = reliability(key).set_index("index_name")["icc"].to_dict()
    return rel.corrected_correlations(frame, icc)
