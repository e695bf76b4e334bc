"""Shared by the benchmarks (``surround.py``, ``fast_path.py``): a cached cpu-preset twin fitted to
simulated scans, and table rows that compare a model's surround with the simulator's.

Imported as a sibling module: run the benchmarks with the venv's python (``.venv/bin/python
benchmarks/NAME.py``), where v1twin's packages are installed.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import twin as twin_package
from insilico.stimuli import gabor

TWIN_SOURCES = Path(twin_package.__file__).parent  # its source is part of the cache key


def architecture(variant: dict) -> dict:
    """The cpu preset's architecture with ``variant`` merged in."""
    from twin.presets import get_preset

    p = get_preset("cpu")
    arch = dict(
        core=dict(p.core), readout=dict(p.readout), downsample=p.downsample, output=p.output
    )
    for k, v in variant.items():
        arch[k] = {**arch[k], **v} if isinstance(v, dict) else v
    return arch


def train(arch: dict, sims, epochs: int, seed: int, noiseless: bool = False, init_seed=None):
    """A twin of ``arch`` fitted to ``sims`` (on their noiseless rates if ``noiseless``), with
    the cpu preset's training settings for ``epochs``, its initialisation and batch order seeded
    by ``init_seed`` (default ``seed``); weights cached in the temp folder, keyed by all of it
    and by the source of ``twin/``. Returns (twin in eval mode, best validation corr, training
    seconds (0: cached))."""
    from twin.data import ScanData
    from twin.presets import get_preset
    from twin.training import build_model, fit

    init_seed = seed if init_seed is None else int(init_seed)
    data = [
        ScanData(s.name, s.images, s.rates if noiseless else s.responses, s.tiers, s.image_ids)
        for s in sims
    ]
    twin = build_model(arch, data, seed=init_seed)
    digest = hashlib.sha1(b"".join(d.responses[:50].tobytes() for d in data)).hexdigest()
    code = hashlib.sha1(
        b"".join(p.read_bytes() for p in sorted(TWIN_SOURCES.glob("*.py")))
    ).hexdigest()
    key = hashlib.sha1(
        json.dumps([arch, epochs, seed, init_seed, digest, code], default=list).encode()
    ).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"v1twin_bench_twin_{key}.pt"
    if path.exists():
        state = torch.load(path, map_location="cpu")
        twin.load_state_dict(state["weights"])
        return twin.eval(), state["val"], 0.0
    cfg = get_preset("cpu").train
    cfg.max_epochs, cfg.device, cfg.seed = epochs, "cpu", init_seed
    t0 = time.perf_counter()
    hist = fit(twin, data, cfg, progress=False)
    torch.save({"weights": twin.state_dict(), "val": hist["best_val_corr"]}, path)
    return twin.eval(), hist["best_val_corr"], time.perf_counter() - t0


@torch.no_grad()
def ring_ratio(respond, sim, neurons, baseline=None) -> np.ndarray:
    """(Gabor + ring of the same grating) / Gabor, contrast 1, per neuron (baseline subtracted)."""
    ii, jj = np.mgrid[: sim.height, : sim.width]
    out = []
    for k in neurons:
        (x, y), th, sf, size = (
            sim.rf_positions[k],
            sim.preferred_orientations[k],
            sim.spatial_frequencies[k],
            sim.sizes[k],
        )
        r = np.hypot(ii - y, jj - x)
        centre = gabor(x, y, size, sf, 1.0, th, 0.0)
        ring = gabor(x, y, 1e3, sf, 1.0, th, 0.0) * torch.tensor(
            (r > 1.2 * size) & (r < 2.5 * size)
        )
        resp = respond(torch.cat([centre, centre + ring]))[:, k] - (
            0.0 if baseline is None else float(baseline[k])
        )
        out.append(float(resp[1] / resp[0]))
    return np.array(out)


def surround_probe(respond, sim_scan, neurons) -> list:
    """Ring probe and natural-image correlations for the surround cells among ``neurons``."""
    sim = sim_scan.model
    cells = [k for k in neurons if sim.types[k] == "simple_surround"]
    images = torch.tensor(sim_scan.standardized()[sim_scan.tiers == "validation"][:500])
    with torch.no_grad():
        twin_r, true_r, flat_r = (
            respond(images).numpy(),
            sim(images).numpy(),
            sim(images, surround=False).numpy(),
        )

    def corr(a, b):
        return np.median([np.corrcoef(a[:, k], b[:, k])[0, 1] for k in cells])

    return [
        (
            f"ring probe (Gabor + ring) / Gabor, simulator (median of {len(cells)})",
            f"{np.median(ring_ratio(sim, sim, cells, sim.baseline)):.2f}",
        ),
        (
            "ring probe (Gabor + ring) / Gabor, twin",
            f"{np.median(ring_ratio(respond, sim, cells)):.2f}",
        ),
        ("natural images: corr(twin, surround cell)", f"{corr(twin_r, true_r):.3f}"),
        ("natural images: corr(twin, same cell without surround)", f"{corr(twin_r, flat_r):.3f}"),
    ]


def suppression_by_type(twin_si, sim_si, types, label="twin") -> list:
    """Table rows: per type, the mean suppression index of simulator and twin and their Spearman
    within the type; and the AUC of the twin's index for surround cells against the others.
    (n,) arrays; NaNs dropped."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    ok = np.isfinite(twin_si) & np.isfinite(sim_si)
    tw, sm, ty = twin_si[ok], sim_si[ok], np.asarray(types)[ok]
    rows = []
    for t in np.unique(ty):
        m = ty == t
        varied = m.sum() > 2 and np.ptp(tw[m]) > 0 and np.ptp(sm[m]) > 0
        rho = spearmanr(tw[m], sm[m]).correlation if varied else np.nan  # nan: a constant index
        rows.append(
            (
                f"[{label}] suppression, {t} (n={m.sum()}): simulator / twin / Spearman within",
                f"{sm[m].mean():.3f} / {tw[m].mean():.3f} / {rho:.2f}",
            )
        )
    auc = roc_auc_score(ty == "simple_surround", tw)
    return rows + [
        (f"[{label}] suppression: AUC of the twin's index, surround cells vs others", f"{auc:.3f}")
    ]


def ideal_twins(sim_si, types, seed=0) -> list:
    """Table rows: the suppression-index Spearman that two ideal twins score against the simulator.
    "surround exact": the simulator's own index for surround cells, the others ranked at random
    below them; "nonzero exact": the simulator's index wherever it is > 0, the neurons at exactly 0
    ranked at random below. They show how much of the Spearman rests on the weak indices of the
    non-surround cells and how much the ties at 0 cap it. (n,) arrays; NaNs dropped."""
    from scipy.stats import spearmanr

    ok = np.isfinite(sim_si)
    sm, sur = sim_si[ok], np.asarray(types)[ok] == "simple_surround"
    rng = np.random.default_rng(seed)
    floor = sm[sm > 0].min() if (sm > 0).any() else 1.0
    ideal_sur = np.where(sur, sm, rng.uniform(0, min(floor, sm[sur].min()) / 2, len(sm)))
    ideal_nonzero = np.where(sm > 0, sm, rng.uniform(0, floor / 2, len(sm)))
    return [
        ("simulator: share of suppression indices exactly 0", f"{np.mean(sm == 0):.2f}"),
        (
            "ideal twin, surround cells exact and others random: Spearman",
            f"{spearmanr(ideal_sur, sm).correlation:.3f}",
        ),
        (
            "ideal twin, nonzero indices exact and zeros random: Spearman",
            f"{spearmanr(ideal_nonzero, sm).correlation:.3f}",
        ),
    ]
