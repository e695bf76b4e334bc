"""Benchmark: the twin's equivariant fast path vs the direct path (prints a table; not a test).

1. Simulate a virtual V1 (simulator.simulate_scans), train a small twin ("cpu" preset,
   or with ``--variant`` merged into its architecture);
   the weights are cached in a temp file keyed by the data, the architecture and the training.
2. Optimal-Gabor search for all neurons (a search over positions x parameters): fast path (core
   once per centred stimulus, readout moves it; alone, and with the pipeline's direct re-scoring
   of each neuron's best few, ``twin_adapter.REFINE``) vs the direct path of earlier pipelines
   (every stimulus rendered at every neuron's RF + offset and passed through the whole model). The
   direct path is linear in the number of neurons (B x N images); it is run on ``--direct-neurons``
   neurons and its time for all neurons is extrapolated (stated in the table).
3. The in-silico battery both ways (same subset; the pipeline's way runs size tuning direct, since
   its largest Gabors reach the canvas edge), batched MEIs vs one neuron at a time, and the
   Spearman correlation of each index between the twin and the simulator (ground truth).

    python benchmarks/fast_path.py --quick
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from common import architecture, ideal_twins, suppression_by_type, surround_probe, train

from insilico import experiments, search, twin_adapter
from insilico.mei import mei
from insilico.twin_adapter import TwinResponseModel
from simulator.recovery import SimSubset, battery, centred_grid, index_spearman


def log(*a):
    print(*a, flush=True)


def get_twin(args):
    """The simulated scans and a cpu-preset twin fitted to them (cached; see common.train)."""
    from simulator import simulate_scans

    t0 = time.perf_counter()
    sims = simulate_scans(
        n_scans=args.scans,
        n_neurons=args.neurons // args.scans,
        n_train=args.n_train,
        n_validation=args.n_train // 5,
        n_test_images=10,
        n_repeats=2,
        seed=args.seed,
    )
    log(
        f"simulated {args.scans} scans x {args.neurons // args.scans} neurons "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    twin, val, secs = train(architecture(json.loads(args.variant)), sims, args.epochs, args.seed)
    log(f"twin: validation corr {val:.3f}, " + (f"trained in {secs:.0f} s" if secs else "cached"))
    return twin, sims


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small grid, few direct neurons")
    ap.add_argument("--neurons", type=int, default=500)
    ap.add_argument("--scans", type=int, default=2)
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--direct-neurons", type=int, default=None)
    ap.add_argument(
        "--index-neurons",
        type=int,
        default=None,
        help="neurons per scan for the battery / Spearman part",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--variant",
        default="{}",
        help="JSON merged into the cpu preset's architecture "
        '(as in benchmarks/surround.py), e.g. \'{"core": {"surround_sigmas": []}}\'',
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n_direct = args.direct_neurons or (4 if args.quick else 12)
    n_index = args.index_neurons or (40 if args.quick else 125)
    rows = []

    twin, sims = get_twin(args)
    models = [TwinResponseModel(twin, s.name) for s in sims]
    pi = np.pi
    if args.quick:
        grid = search.GaborGrid(
            offsets=(-1.0, 0.0, 1.0),
            sizes=(6.0, 12.0),
            sfs=(1 / 16, 1 / 8),
            contrasts=(4.0,),
            orientations=tuple(np.arange(8) * pi / 8),
            phases=tuple(np.arange(4) * pi / 2),
        )
    else:
        grid = search.GaborGrid(
            offsets=(-1.0, 0.0, 1.0),
            sizes=(6.0, 12.0),
            sfs=(1 / 16, 1 / 10, 1 / 6),
            contrasts=(4.0,),
            orientations=tuple(np.arange(8) * pi / 8),
            phases=tuple(np.arange(4) * pi / 2),
        )
    n_all = sum(m.n_neurons for m in models)
    log(
        f"Gabor grid: {len(grid)} stimuli (incl. {len(grid.offsets) ** 2} positions) x {n_all} "
        f"neurons"
    )

    # ---- optimal Gabor: fast path, all neurons, then with the pipeline's direct re-scoring -----
    fast_ds, refined, t_fast, t_refined = [], [], 0.0, 0.0
    with torch.no_grad():
        for m in models:
            (ds, resp), t = timed(
                lambda m=m: search.optimal_gabor(
                    m, grid, respond=m.fast_respond(), center=m.center, return_responses=True
                )
            )
            fast_ds.append((ds, resp))
            t_fast += t
            ds_r, t = timed(
                lambda m=m: search.optimal_gabor(
                    m, grid, respond=m.fast_respond(), center=m.center, refine=twin_adapter.REFINE
                )
            )
            refined.append(ds_r)
            t_refined += t
    border = np.concatenate([m.border_mask() for m in models])
    log(f"fast path: {t_fast:.1f} s; border neurons (direct fallback needed): {border.sum()}")

    # ---- direct path on a subset (interior neurons), extrapolated ------------------------------
    m0 = models[0]
    interior = np.flatnonzero(~m0.border_mask())[:n_direct]
    if interior.size == 0:
        raise SystemExit(
            f"every neuron is within the fast path's border margin of this twin "
            f"(hidden reach {m0.twin.hidden_reach} px + normalisation pool "
            f"{m0.twin.pool_reach(m0.scan):.0f} px); the fast-vs-direct comparison "
            f"needs neurons with an interior RF"
        )
    sub = m0.subset(interior)
    with torch.no_grad():
        (dd, rd), t_dir = timed(lambda: search.optimal_gabor(sub, grid, return_responses=True))
    t_dir_all = t_dir / len(interior) * n_all
    df, rf = fast_ds[0][0].isel(neuron=interior), fast_ds[0][1][:, interior]
    same = np.ones(len(interior), bool)
    same_r = np.ones(len(interior), bool)
    dr = refined[0].isel(neuron=interior)
    for k in search.GABOR_KEYS:
        same &= np.isclose(dd[k].values, df[k].values, atol=1e-6)
        same_r &= np.isclose(dd[k].values, dr[k].values, atol=1e-6)
    loss_r = 1 - dr.response.values / dd.response.values
    diff = (rd - rf).abs()
    rel = (diff.max(0).values / rd.max(0).values).numpy()
    chosen = rd.gather(0, rf.argmax(0)[None])[0]
    loss = (1 - chosen / rd.max(0).values).numpy()
    rows += [
        ("gabor search: fast, all neurons [s]", f"{t_fast:.2f}"),
        (f"gabor search: direct, {len(interior)} neurons measured [s]", f"{t_dir:.2f}"),
        (f"gabor search: direct, {n_all} neurons extrapolated [s]", f"{t_dir_all:.1f}"),
        ("gabor search: speed-up (direct / fast)", f"{t_dir_all / t_fast:.0f}x"),
        ("gabor: same parameters chosen (subset)", f"{same.sum()}/{len(same)}"),
        ("gabor: max |fast - direct| / max response (all grid)", f"{rel.max():.4f}"),
        ("gabor: direct-response loss of fast's choice (max)", f"{loss.max():.4f}"),
        (
            "gabor: max |best response fast - direct|",
            f"{np.abs(dd.response.values - df.response.values).max():.4f}",
        ),
        (
            f"gabor search: fast + direct re-scoring of {twin_adapter.REFINE} best (pipeline), "
            "all neurons [s]",
            f"{t_refined:.2f}",
        ),
        (
            "gabor search: speed-up with re-scoring (direct / fast + re-scoring)",
            f"{t_dir_all / t_refined:.0f}x",
        ),
        ("gabor, re-scored: same parameters chosen (subset)", f"{same_r.sum()}/{len(same_r)}"),
        ("gabor, re-scored: direct-response loss of its choice (max)", f"{loss_r.max():.4f}"),
    ]

    # ---- battery both ways: the pipeline's (fast path; direct for border neurons and for size
    # tuning, whose largest Gabors reach the canvas edge) on all neurons of scan 0, direct on the
    # subset
    ds0 = refined[0]  # the pipeline's optimal Gabors
    n0 = m0.n_neurons
    with torch.no_grad():
        (_, idx_f), t_bf = timed(lambda: twin_adapter.run_battery(m0, ds0))
        (_, idx_d), t_bd = timed(lambda: experiments.run_battery(sub, ds0.isel(neuron=interior)))
    t_bd_all = t_bd / len(interior) * n0
    dmax = float(np.nanmax(np.abs(idx_f.iloc[interior].values - idx_d.values)))
    rows += [
        (f"battery: pipeline (fast path, size tuning direct), {n0} neurons [s]", f"{t_bf:.2f}"),
        (f"battery: direct, {len(interior)} neurons measured [s]", f"{t_bd:.2f}"),
        (f"battery: direct, {n0} neurons extrapolated [s]", f"{t_bd_all:.1f}"),
        ("battery: speed-up", f"{t_bd_all / t_bf:.1f}x"),
        ("battery: max |index fast - direct| (subset)", f"{dmax:.4f}"),
    ]

    # ---- MEIs: batched vs one at a time --------------------------------------------------------
    k_mei = min(len(interior), 4 if args.quick else 8)
    steps = 10 if args.quick else 30
    neurons = interior[:k_mei]
    init = torch.randn(k_mei, 1, 36, 64, generator=torch.Generator().manual_seed(0))
    r_b, t_mb = timed(lambda: mei(m0, neurons, norm=10.0, steps=steps, seed=0, init=init))
    singles, t_m1 = timed(
        lambda: [
            mei(m0, [int(n)], norm=10.0, steps=steps, seed=0, init=init[i : i + 1])
            for i, n in enumerate(neurons)
        ]
    )
    r1 = np.array([float(s.responses[0]) for s in singles])
    rows += [
        (f"MEI: batched, {k_mei} neurons x {steps} steps [s]", f"{t_mb:.2f}"),
        ("MEI: one neuron at a time [s]", f"{t_m1:.2f}"),
        ("MEI: speed-up", f"{t_m1 / t_mb:.1f}x"),
        (
            "MEI: max |resp batched - single| / resp",
            f"{np.max(np.abs(r_b.responses.numpy() - r1) / r1):.4f}",
        ),
    ]

    # ---- indices twin vs simulator (Spearman) --------------------------------------------------
    twin_idx, sim_idx, types = [], [], []
    t0 = time.perf_counter()
    with torch.no_grad():
        for m, s, ds in zip(models, sims, refined):
            sel = np.flatnonzero(~m.border_mask())[:n_index]
            twin_idx.append(twin_adapter.run_battery(m.subset(sel), ds.isel(neuron=sel))[1])
            sim_idx.append(battery(SimSubset(s.model, sel), centred_grid()))
            types.append(s.model.types[sel])
    import pandas as pd

    ti, si = pd.concat(twin_idx, ignore_index=True), pd.concat(sim_idx, ignore_index=True)
    log(f"index battery twin + simulator: {time.perf_counter() - t0:.0f} s")
    rows += [
        (f"Spearman twin vs simulator: {col} (n={n})", f"{rho:.3f}")
        for col, (rho, n) in index_spearman(ti, si).items()
    ]
    types = np.concatenate(types)
    rows += suppression_by_type(
        ti["suppression_index"].values, si["suppression_index"].values, types
    )
    rows += ideal_twins(si["suppression_index"].values, types)

    m0_interior = np.flatnonzero(~models[0].border_mask())
    rows += surround_probe(models[0], sims[0], m0_interior)

    w = max(len(r[0]) for r in rows)
    print("\n" + "=" * (w + 14))
    for name, val in rows:
        print(f"{name:<{w}}  {val:>10}")
    print("=" * (w + 14))


if __name__ == "__main__":
    main()
