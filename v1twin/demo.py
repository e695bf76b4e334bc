"""``v1twin demo``: the whole pipeline on a virtual V1, and how well it recovered the truth.

1. simulate a virtual V1 (2 scans x 300 neurons) and write it in the Sensorium format;
2. import it, as real data would be;
3. populate every stage with the ``cpu`` preset;
4. write the report and the export;
5. compare with the simulator's ground truth: adjusted Rand index of the clusters against the
   true types, Spearman correlation of each in-silico index of the twin with the same index
   measured on the simulator, and the twin's median FEVE.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd


def run(
    out: Path,
    seed: int = 0,
    n_neurons: int = 300,
    n_scans: int = 2,
    n_train: int = 4000,
    progress: bool = True,
) -> dict:
    """The demo; returns the recovery figures (also written to ``out/recovery.json``).
    progress: bars inside every stage (and the populate summary is printed either way)."""
    import schemas
    from simulator import simulate_scans, write_simulation
    from simulator.recovery import recovery, true_indices

    from . import config, export, pipeline
    from .sensorium import read_sensorium

    t0 = time.perf_counter()
    out = Path(out)
    print(f"[1/5] simulating a virtual V1: {n_scans} scans x {n_neurons} neurons")
    scans = simulate_scans(n_scans=n_scans, n_neurons=n_neurons, n_train=n_train, seed=seed)
    folders = write_simulation(out / "data", scans)
    print(f"[2/5] importing {len(folders)} Sensorium folders")
    modules = schemas.activate()
    schemas.show_progress(progress)
    for folder in folders:
        modules["recording"].insert_recording(read_sensorium(folder, progress=progress))
    print("[3/5] populating every stage (cpu preset)")
    cfg = config.defaults("cpu")
    print(pipeline.summary(pipeline.populate(cfg, progress=progress)))
    # the parameter sets just populated: the database may hold others (an earlier demo's)
    chosen = pipeline.add_parameters(cfg)
    print("[4/5] writing the report and the export")
    export.report(out / "report", chosen)
    export.export(out / "export", chosen)
    print("[5/5] comparing with the simulator's ground truth")
    neurons = pd.read_csv(out / "export" / "neurons.csv")
    result = recovery(neurons, true_indices(scans))
    k = json.loads((out / "export" / "clustering.json").read_text())
    result.update(n_clusters=k["n_clusters"], k_reason=k["k_reason"])
    result["seconds"] = time.perf_counter() - t0
    (out / "recovery.json").write_text(json.dumps(result, indent=2))
    return result


def summary(result: dict) -> str:
    from simulator.recovery import INDICES

    lines = [
        "How well the pipeline recovered the virtual V1's truth:",
        f"  clusters: k = {result['n_clusters']} ({result['k_reason']})",
        f"  clusters vs true types (adjusted Rand index): {result['ari_clusters_vs_types']:.2f}",
        f"  median FEVE of the twin:                      {result['median_feve']:.2f}",
    ]
    lines += [
        f"  Spearman, twin vs simulator, {k:18}: {result['spearman_' + k]:.2f}" for k in INDICES
    ]
    lines.append(f"  ({result['neurons']} neurons, {result['seconds'] / 60:.1f} minutes in all)")
    return "\n".join(lines)
