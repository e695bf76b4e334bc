"""Population analysis (insilico.population) on synthetic neurons with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from insilico import population as pop


def _neurons(n_clusters=10, per_cluster=100, shift=None, seed=0):
    """Every index ~ N(0, 1) in every cluster; `shift` = {(cluster, index): delta}."""
    rng = np.random.default_rng(seed)
    cluster = np.repeat(np.arange(n_clusters), per_cluster)
    df = pd.DataFrame({"cluster": cluster})
    for index in pop.INDICES:
        df[index] = rng.normal(size=len(cluster))
    for (c, index), delta in (shift or {}).items():
        df.loc[df.cluster == c, index] += delta
    return df


def test_shifted_cluster_is_significant_and_others_mostly_not():
    df = _neurons(shift={(3, "orientation_index"): 1.0, (3, "plaid_index"): -1.0})
    ks = pop.cluster_ks(df)
    assert len(ks) == 10 * len(pop.INDICES)
    sig = ks.set_index(["cluster", "index_name"])["significant"]
    assert sig[(3, "orientation_index")] and sig[(3, "plaid_index")]
    assert ks.set_index(["cluster", "index_name"]).loc[(3, "orientation_index"), "p_value"] < 1e-6
    planted = {(3, "orientation_index"), (3, "plaid_index")}
    others = [s for k, s in sig.items() if k not in planted]
    assert sum(others) <= 3  # alpha = 0.01 over 88 null tests: about 1 expected
    summary = pop.ks_summary(ks)
    assert summary["n_clusters"] == 10 and summary["n_tests"] == 90
    assert 1 <= summary["n_any"] <= 4 and summary["n_all"] == 0


def test_all_indices_shifted_cluster_counts_in_n_all():
    df = _neurons(shift={(0, i): 2.0 for i in pop.INDICES})
    summary = pop.ks_summary(pop.cluster_ks(df))
    assert summary["n_all"] == 1


def test_random_assignments_control_is_mostly_not_significant():
    df = _neurons(shift={(3, "orientation_index"): 1.0})
    control = pop.control_ks(df, n_repeats=5, seed=1)
    assert list(control.columns) == [
        "repeat",
        "n_clusters",
        "n_tests",
        "n_significant",
        "n_any",
        "n_all",
    ]
    assert len(control) == 5
    assert control["n_significant"].mean() <= 2.5  # the planted shift is spread over all clusters
    assert (control["n_all"] == 0).all()
    # cluster sizes are kept by the permutation
    assert (control["n_clusters"] == 10).all()


def test_ks_ignores_nan_and_handles_tiny_clusters():
    df = _neurons(n_clusters=3, per_cluster=30)
    df.loc[:5, "nonlinearity_index"] = np.nan
    df.loc[6, "nonlinearity_index"] = np.inf
    df = pd.concat(
        [df, pd.DataFrame([{"cluster": 9, **{i: 0.0 for i in pop.INDICES}}])], ignore_index=True
    )
    ks = pop.cluster_ks(df).set_index(["cluster", "index_name"])
    assert ks.loc[(0, "nonlinearity_index"), "n_neurons"] == 30 - 7
    assert np.isfinite(ks.loc[(0, "nonlinearity_index"), "p_value"])
    assert (
        np.isnan(ks.loc[(9, "orientation_index"), "p_value"])
        and not ks.loc[(9, "orientation_index"), "significant"]
    )


def test_missing_column_names_it():
    with pytest.raises(KeyError, match="plaid_index"):
        pop.cluster_ks(pd.DataFrame({"cluster": [0, 1]}), indices=["plaid_index"])


def _constructed_means():
    """Cluster c (0..7) has exact means: a = c, b = 2c + 1, c3 = -c**3, d constant."""
    rows = []
    for c in range(8):
        for offset in (-0.5, 0.5):  # symmetric: the means are exact
            rows.append(
                dict(
                    cluster=c,
                    a=c + offset,
                    b=2 * c + 1 + offset,
                    c3=-(c**3) + offset,
                    d=1.0 + offset,
                )
            )
    return pd.DataFrame(rows)


def test_correlations_of_constructed_cluster_means():
    means = pop.cluster_means(_constructed_means(), indices=["a", "b", "c3", "d"])
    assert list(means.index) == list(range(8)) and (means["n_neurons"] == 2).all()
    np.testing.assert_allclose(means["b"], 2 * np.arange(8) + 1)
    corr = pop.index_correlations(means, indices=["a", "b", "c3", "d"]).set_index(
        ["index_a", "index_b"]
    )
    assert len(corr) == 6
    ab = corr.loc[("a", "b")]
    assert ab.n == 8
    assert ab.pearson_r == pytest.approx(1.0) and ab.spearman_r == pytest.approx(1.0)
    assert ab.pearson_p < 1e-6 and ab.spearman_p < 1e-6
    ac = corr.loc[("a", "c3")]
    assert ac.spearman_r == pytest.approx(-1.0)  # monotone but not linear
    assert -1.0 < ac.pearson_r < -0.8
    assert np.isnan(corr.loc[("a", "d"), "pearson_r"])  # constant cluster means: undefined
    sub = pop.index_correlations(means, indices=["a", "b"], clusters=[1, 3, 5]).iloc[0]
    assert sub.n == 3 and sub.pearson_r == pytest.approx(1.0)


# planted Gabor-like clusters: (phase, suppression, plaid) high/low
PLANTED = {0: (0, 0, 0), 1: (1, 0, 0), 2: (1, 0, 1), 3: (0, 1, 1), 4: (1, 1, 1)}
NOT_GABOR = {5: (0, 1, 0), 6: (1, 1, 0), 7: (0, 0, 1)}


def _code_neurons(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for c, (ph, su, pl) in {**PLANTED, **NOT_GABOR}.items():
        gate = 1.0 if c in PLANTED else 0.0
        for _ in range(20):
            noise = rng.uniform(-0.1, 0.1, 5)
            rows.append(
                dict(
                    cluster=c,
                    phase_index=ph + noise[0],
                    suppression_index=su + noise[1],
                    plaid_index=pl + noise[2],
                    gabor_vs_mei=gate + noise[3],
                    orientation_index=noise[4],
                )
            )
    return pd.DataFrame(rows)


def test_combinatorial_code_lists_exactly_the_planted_combinations():
    code = pop.combinatorial_code(_code_neurons())
    assert list(code["cluster"]) == list(range(8))
    assert set(code.loc[code.gabor_like, "cluster"]) == set(PLANTED)
    for c, (ph, su, pl) in {**PLANTED, **NOT_GABOR}.items():
        row = code.set_index("cluster").loc[c]
        assert (row.phase_high, row.suppression_high, row.plaid_high) == (
            bool(ph),
            bool(su),
            bool(pl),
        )
        assert row.code == ph + 2 * su + 4 * pl
    combos = pop.code_combinations(code)
    assert len(combos) == 8 and combos["code"].tolist() == list(range(8))
    occurring = {
        tuple(int(x) for x in (r.phase_high, r.suppression_high, r.plaid_high))
        for r in combos[combos.occurs].itertuples()
    }
    assert occurring == set(PLANTED.values())
    assert combos.set_index("combination").loc["phase+plaid", "clusters"] == [2]
    assert combos.set_index("combination").loc["none", "clusters"] == [0]
    assert combos.set_index("combination").loc["phase+suppression+plaid", "clusters"] == [4]
    # the non-Gabor-like clusters' combinations appear only when asked for
    everything = pop.code_combinations(code, only_gabor_like=False)
    assert everything["occurs"].sum() == len(set(PLANTED.values()) | set(NOT_GABOR.values()))


def test_thresholds_are_population_averages_not_cluster_averages():
    # one big low cluster and two small high ones: the population mean sits low,
    # so a cluster just above it is high although it is below the mean of cluster means
    rows = [
        dict(cluster=0, phase_index=0.0, suppression_index=0.0, plaid_index=0.0, gabor_vs_mei=1.0)
    ] * 80
    rows += [
        dict(cluster=1, phase_index=1.0, suppression_index=1.0, plaid_index=1.0, gabor_vs_mei=1.0)
    ] * 10
    rows += [
        dict(cluster=2, phase_index=0.3, suppression_index=0.3, plaid_index=0.3, gabor_vs_mei=1.0)
    ] * 10
    df = pd.DataFrame(rows)
    assert pop.population_thresholds(df, ["phase_index"])["phase_index"] == pytest.approx(0.13)
    code = pop.combinatorial_code(df).set_index("cluster")
    assert code.loc[2, "phase_high"] and not code.loc[0, "phase_high"]


def test_cluster_table_has_sizes_means_and_code():
    df = _neurons(n_clusters=4, per_cluster=25)
    table = pop.cluster_table(df)
    assert len(table) == 4 and table["n_neurons"].tolist() == [25] * 4
    for col in (
        "cluster",
        "n_significant_ks",
        "gabor_like",
        "phase_high",
        "suppression_high",
        "plaid_high",
        "combination",
        *pop.INDICES,
    ):
        assert col in table.columns
