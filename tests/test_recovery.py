"""simulator.recovery: the demo's and benchmarks' comparison with the simulator's truth."""

import numpy as np
import pandas as pd
import pytest

from simulator.recovery import INDICES, index_spearman, recovery


def _tables(n=40, seed=0):
    rng = np.random.default_rng(seed)
    types = np.repeat(["simple", "complex"], n // 2)
    truth = pd.DataFrame(
        {"scan": "1-1-1", "unit_id": np.arange(n), "type": types}
        | {k: rng.uniform(size=n) for k in INDICES}
    )
    neurons = pd.DataFrame(
        {
            "scan": "1-1-1",
            "unit_id": np.arange(n)[::-1],  # another row order: merged on the keys
            "cluster": np.where(types == "simple", 3, 7)[::-1],
            "feve": np.linspace(0.5, 0.9, n),
        }
        | {k: (2 * truth[k].to_numpy() + 1)[::-1] for k in INDICES}  # monotonic in the truth
    )
    return neurons, truth


def test_recovery_of_a_perfect_model():
    neurons, truth = _tables()
    neurons.loc[0, "suppression_index"] = np.nan  # dropped, not propagated
    out = recovery(neurons, truth)
    assert out["neurons"] == 40 and out["ari_clusters_vs_types"] == pytest.approx(1.0)
    assert out["median_feve"] == pytest.approx(0.7)
    assert all(out[f"spearman_{k}"] == pytest.approx(1.0) for k in INDICES)


def test_index_spearman_counts_and_sign():
    a = pd.DataFrame({k: np.arange(10.0) for k in INDICES})
    b = pd.DataFrame({k: -np.arange(10.0) for k in INDICES})
    b.loc[2, "plaid_index"] = np.nan
    out = index_spearman(a, b)
    assert out["orientation_index"] == pytest.approx((-1.0, 10))
    assert out["plaid_index"] == pytest.approx((-1.0, 9))
