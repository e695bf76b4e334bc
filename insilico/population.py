"""Population statistics of the in-silico tuning indices over functional clusters (DT Fig. 3-4).

Pure pandas / SciPy on a *neurons* DataFrame: one row per neuron, a ``cluster`` column (int) and
one column per tuning index (see :data:`INDICES`). No database: :mod:`schemas.analysis` stores
the results, :mod:`v1twin.report` draws them.

- :func:`cluster_ks`: per cluster and index, a two-sided Kolmogorov-Smirnov test of the cluster's
  values against the whole population's (alpha = 0.01); :func:`ks_summary` counts clusters that
  differ on at least one / on all indices; :func:`control_ks` gives the same counts for random
  cluster assignments (labels permuted, cluster sizes kept) as the control.
- :func:`cluster_means` and :func:`index_correlations`: Spearman and Pearson correlations (with
  p-values) between cluster-mean indices, for all clusters or a subset (e.g. the Gabor-like ones).
- :func:`combinatorial_code`: Gabor-like clusters are those whose mean Gabor-vs-MEI index is above
  the population average (mean over neurons); each cluster is binarised high / low on phase,
  suppression and plaid tuning with the population average of each index as the threshold;
  :func:`code_combinations` lists which of the eight combinations occur among Gabor-like clusters.

NaN / infinite index values (e.g. a non-linearity index whose GLM correlation is 0) are left out
of every statistic, per index.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "INDICES",
    "CODE_PROPERTIES",
    "GATE",
    "ALPHA",
    "cluster_ks",
    "ks_summary",
    "control_ks",
    "cluster_means",
    "index_correlations",
    "population_thresholds",
    "combinatorial_code",
    "code_combinations",
    "combination_label",
    "cluster_table",
]

#: Tuning indices, as named in the insilico tables' columns.
INDICES: tuple[str, ...] = (
    "orientation_index",
    "phase_index",
    "suppression_index",
    "contrast_index",
    "plaid_index",
    "gabor_vs_dog",
    "gabor_vs_mei",
    "dog_vs_mei",
    "nonlinearity_index",
)
#: The three non-linear properties of the combinatorial code (DT Fig. 4C), in bit order.
CODE_PROPERTIES: tuple[str, ...] = ("phase_index", "suppression_index", "plaid_index")
#: The index that decides which clusters are Gabor-like.
GATE = "gabor_vs_mei"
ALPHA = 0.01


def _short(index: str) -> str:
    return index.removesuffix("_index")


def _finite(values) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    return v[np.isfinite(v)]


def _check(neurons: pd.DataFrame, columns, cluster: str | None = "cluster") -> None:
    missing = [
        c for c in ([cluster] if cluster else []) + list(columns) if c not in neurons.columns
    ]
    if missing:
        raise KeyError(f"neurons DataFrame lacks columns {missing}; it has {list(neurons.columns)}")


def _present(neurons: pd.DataFrame, indices) -> list[str]:
    """The indices that are columns of `neurons` (all of them when `indices` was given)."""
    if indices is None:
        return [i for i in INDICES if i in neurons.columns]
    _check(neurons, indices, cluster=None)
    return list(indices)


def cluster_ks(
    neurons: pd.DataFrame, indices=None, cluster: str = "cluster", alpha: float = ALPHA
) -> pd.DataFrame:
    """Two-sided KS test of each cluster's index values against the population, per index.

    Returns one row per (cluster, index): ``cluster, index_name, n_neurons, statistic, p_value,
    significant`` (p < alpha). A cluster with fewer than 2 finite values of an index gets NaN
    statistic and p-value and is not significant.
    """
    indices = _present(neurons, indices)
    _check(neurons, indices, cluster)
    rows = []
    for index in indices:
        population = _finite(neurons[index])
        for c, group in neurons.groupby(cluster, sort=True):
            values = _finite(group[index])
            if len(values) >= 2 and len(population) >= 2:
                res = stats.ks_2samp(values, population, alternative="two-sided")
                statistic, p = float(res.statistic), float(res.pvalue)
            else:
                statistic, p = np.nan, np.nan
            rows.append(
                dict(
                    cluster=int(c),
                    index_name=index,
                    n_neurons=len(values),
                    statistic=statistic,
                    p_value=p,
                    significant=bool(np.isfinite(p) and p < alpha),
                )
            )
    columns = ["cluster", "index_name", "n_neurons", "statistic", "p_value", "significant"]
    return pd.DataFrame(rows, columns=columns).sort_values(
        ["cluster", "index_name"], ignore_index=True
    )


def ks_summary(ks: pd.DataFrame) -> dict:
    """Counts from a :func:`cluster_ks` table: clusters, tests, significant tests, clusters
    significant on at least one index (``n_any``) and on all of them (``n_all``)."""
    per_cluster = ks.groupby("cluster")["significant"]
    return dict(
        n_clusters=int(per_cluster.ngroups),
        n_tests=int(len(ks)),
        n_significant=int(ks["significant"].sum()),
        n_any=int(per_cluster.any().sum()),
        n_all=int(per_cluster.all().sum()),
    )


def control_ks(
    neurons: pd.DataFrame,
    indices=None,
    cluster: str = "cluster",
    alpha: float = ALPHA,
    n_repeats: int = 10,
    seed: int = 0,
) -> pd.DataFrame:
    """:func:`ks_summary` counts for random cluster assignments: the labels permuted across
    neurons (so cluster sizes are kept), ``n_repeats`` times. One row per repeat."""
    rng = np.random.default_rng(seed)
    rows = []
    for repeat in range(n_repeats):
        shuffled = neurons.assign(**{cluster: rng.permutation(neurons[cluster].to_numpy())})
        rows.append(
            dict(repeat=repeat, **ks_summary(cluster_ks(shuffled, indices, cluster, alpha)))
        )
    return pd.DataFrame(rows)


def cluster_means(neurons: pd.DataFrame, indices=None, cluster: str = "cluster") -> pd.DataFrame:
    """Mean of each index per cluster (finite values only), and ``n_neurons``; indexed by
    cluster."""
    indices = _present(neurons, indices)
    _check(neurons, indices, cluster)
    values = neurons[indices].astype(float).where(np.isfinite(neurons[indices].astype(float)))
    groups = values.groupby(neurons[cluster].astype(int))
    means = groups.mean()
    means.insert(0, "n_neurons", groups.size())
    means.index.name = cluster
    return means


def _corr(f, a, b):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: NaN, said by the result
        r, p = f(a, b)
    return float(r), float(p)


def index_correlations(means: pd.DataFrame, indices=None, clusters=None) -> pd.DataFrame:
    """Spearman and Pearson correlations between cluster-mean indices, every pair once.

    `means`: one row per cluster (e.g. :func:`cluster_means`); `clusters`: optional subset of its
    index (e.g. the Gabor-like clusters). Returns ``index_a, index_b, n, spearman_r, spearman_p,
    pearson_r, pearson_p``; NaN where fewer than 3 clusters have both values or one is constant.
    """
    indices = _present(means, indices)
    if clusters is not None:
        means = means.loc[list(clusters)]
    rows = []
    for a, b in itertools.combinations(indices, 2):
        x, y = means[a].to_numpy(float), means[b].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        row = dict(index_a=a, index_b=b, n=int(ok.sum()))
        if ok.sum() >= 3:
            row["spearman_r"], row["spearman_p"] = _corr(stats.spearmanr, x[ok], y[ok])
            row["pearson_r"], row["pearson_p"] = _corr(stats.pearsonr, x[ok], y[ok])
        else:
            row.update(spearman_r=np.nan, spearman_p=np.nan, pearson_r=np.nan, pearson_p=np.nan)
        rows.append(row)
    return pd.DataFrame(
        rows,
        columns=["index_a", "index_b", "n", "spearman_r", "spearman_p", "pearson_r", "pearson_p"],
    )


def population_thresholds(neurons: pd.DataFrame, indices=None) -> dict[str, float]:
    """Population average (mean over neurons, finite values) of each index."""
    indices = _present(neurons, indices)
    return {
        i: float(np.mean(_finite(neurons[i]))) if len(_finite(neurons[i])) else np.nan
        for i in indices
    }


def combination_label(highs, properties=CODE_PROPERTIES) -> str:
    """'phase+plaid'-style name of the high properties; 'none' when all are low."""
    names = [_short(p) for p, h in zip(properties, highs) if h]
    return "+".join(names) if names else "none"


def combinatorial_code(
    neurons: pd.DataFrame, cluster: str = "cluster", properties=CODE_PROPERTIES, gate: str = GATE
) -> pd.DataFrame:
    """Per cluster: Gabor-like or not, and high / low on each property (DT Fig. 4B-C).

    Gabor-like: cluster-mean ``gate`` index above its population average. High: cluster-mean
    index above the population average of that index. Returns one row per cluster: ``cluster,
    n_neurons, gabor_like, {short}_high`` for each property (``phase_high, suppression_high,
    plaid_high``), ``code`` (bit i set when property i is high) and ``combination``
    (:func:`combination_label`). Clusters that are not Gabor-like are binarised too; select
    ``gabor_like`` for the code proper.
    """
    properties = tuple(properties)
    _check(neurons, properties + (gate,), cluster)
    thresholds = population_thresholds(neurons, properties + (gate,))
    means = cluster_means(neurons, properties + (gate,), cluster)
    out = pd.DataFrame(
        {cluster: means.index.to_numpy(int), "n_neurons": means["n_neurons"].to_numpy(int)}
    )
    out["gabor_like"] = (means[gate] > thresholds[gate]).to_numpy(bool)
    highs = []
    for p in properties:
        high = (means[p] > thresholds[p]).to_numpy(bool)
        out[f"{_short(p)}_high"] = high
        highs.append(high)
    highs = np.stack(highs, axis=1) if highs else np.zeros((len(out), 0), bool)
    out["code"] = (highs * (1 << np.arange(highs.shape[1]))).sum(axis=1).astype(int)
    out["combination"] = [combination_label(h, properties) for h in highs]
    return out


def code_combinations(
    code: pd.DataFrame,
    properties=CODE_PROPERTIES,
    only_gabor_like: bool = True,
    cluster: str = "cluster",
) -> pd.DataFrame:
    """All 2**len(properties) combinations with the clusters showing each (Gabor-like ones by
    default): ``code, combination, {short}_high..., n_clusters, clusters`` (a list), ``occurs``."""
    properties = tuple(properties)
    rows = code[code["gabor_like"]] if only_gabor_like else code
    out = []
    for bits in range(2 ** len(properties)):
        highs = [bool(bits >> i & 1) for i in range(len(properties))]
        members = sorted(int(c) for c in rows.loc[rows["code"] == bits, cluster])
        out.append(
            dict(
                code=bits,
                combination=combination_label(highs, properties),
                **{f"{_short(p)}_high": h for p, h in zip(properties, highs)},
                n_clusters=len(members),
                clusters=members,
                occurs=bool(members),
            )
        )
    return pd.DataFrame(out)


def cluster_table(
    neurons: pd.DataFrame, indices=None, cluster: str = "cluster", alpha: float = ALPHA
) -> pd.DataFrame:
    """One row per cluster for clusters.csv: size, mean of every index, the number of indices on
    which the cluster differs from the population (KS), and its combinatorial code."""
    indices = _present(neurons, indices)
    means = cluster_means(neurons, indices, cluster).reset_index()
    ks = cluster_ks(neurons, indices, cluster, alpha)
    n_sig = ks.groupby("cluster")["significant"].sum().rename("n_significant_ks").reset_index()
    out = means.merge(n_sig, on=cluster, how="left")
    needed = set(CODE_PROPERTIES) | {GATE}
    if needed <= set(neurons.columns):
        code = combinatorial_code(neurons, cluster).drop(columns="n_neurons")
        out = out.merge(code, on=cluster, how="left")
    return out
