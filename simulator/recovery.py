"""How well a model recovers the virtual V1's truth: the battery's indices, twin vs simulator.

Used by the demo (``v1twin demo``) and the benchmarks. Index tables are pandas DataFrames with
one row per neuron and the columns of :data:`INDICES` (DT Eq. 9-14).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from insilico import experiments, search
from insilico.model import pixels_per_degree

INDICES = ("orientation_index", "phase_index", "suppression_index", "plaid_index")


class SimSubset:
    """Some of the simulator's neurons, ``idx`` (n,), as an insilico ResponseModel."""

    def __init__(self, sim, idx):
        self.sim, self.idx = sim, torch.as_tensor(idx)
        self.rf_positions = np.asarray(sim.rf_positions)[idx]
        self.preferred_orientations = np.asarray(sim.preferred_orientations)[idx]
        self.image_shape, self.pixels_per_degree = sim.image_shape, sim.pixels_per_degree

    def parameters(self):
        return self.sim.parameters()

    def __call__(self, images):
        return self.sim(images)[:, self.idx]

    def respond_own(self, images, neuron_index):
        return self.sim.respond_own(images, self.idx[torch.as_tensor(neuron_index)])


def centred_grid() -> search.GaborGrid:
    """The benchmarks' Gabor grid: no position offsets, 2 sizes x 3 sfs x 8 orientations x 4
    phases, contrast 4 (standardized)."""
    return search.GaborGrid(
        offsets=(0.0,),
        sizes=(6.0, 12.0),
        sfs=(1 / 16, 1 / 10, 1 / 6),
        contrasts=(4.0,),
        orientations=tuple(np.arange(8) * np.pi / 8),
        phases=tuple(np.arange(4) * np.pi / 2),
    )


@torch.no_grad()
def battery(model, grid: search.GaborGrid | None = None) -> pd.DataFrame:
    """Index table of ``model``'s battery at its own optimal Gabor from ``grid`` (default
    ``GaborGrid.cpu`` at the model's pixels per degree), all by the direct path."""
    grid = grid or search.GaborGrid.cpu(pixels_per_degree(model))
    best = search.optimal_gabor(model, grid)
    return experiments.run_battery(model, search.params_of(best))[1]


def index_spearman(model_idx: pd.DataFrame, true_idx: pd.DataFrame) -> dict:
    """{index: (Spearman model vs truth, number of neurons)} of :data:`INDICES`; rows of the two
    tables are the same neurons in the same order, and pairs with a NaN are dropped."""
    from scipy.stats import spearmanr

    out = {}
    for c in INDICES:
        a, b = np.asarray(model_idx[c], float), np.asarray(true_idx[c], float)
        ok = np.isfinite(a) & np.isfinite(b)
        out[c] = (float(spearmanr(a[ok], b[ok]).statistic), int(ok.sum()))
    return out


def true_indices(scans) -> pd.DataFrame:
    """The battery run on the simulator itself: one row per neuron, columns scan, unit_id, type
    and :data:`INDICES`. scans: :class:`simulator.SimulatedScan` list."""
    frames = []
    for scan in scans:
        indices = battery(scan.model)
        frames.append(
            pd.DataFrame(
                {
                    "scan": scan.name,
                    "unit_id": scan.unit_ids,
                    "type": scan.model.types,
                    **{k: indices[k].to_numpy() for k in INDICES},
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def recovery(neurons: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """ARI of clusters vs types, Spearman of each index (model vs simulator), median FEVE.

    neurons: the export's neurons.csv (scan, unit_id, cluster, feve and :data:`INDICES`);
    truth: :func:`true_indices`."""
    from sklearn.metrics import adjusted_rand_score

    both = neurons.merge(truth, on=["scan", "unit_id"], suffixes=("", "_true"))
    true_idx = both[[k + "_true" for k in INDICES]].set_axis(list(INDICES), axis=1)
    out = {
        "neurons": int(len(both)),
        "ari_clusters_vs_types": float(adjusted_rand_score(both["type"], both["cluster"])),
        "median_feve": float(np.nanmedian(both["feve"])),
    }
    for index, (rho, _) in index_spearman(both, true_idx).items():
        out[f"spearman_{index}"] = rho
    return out
