"""Benchmark: the optimal-stimulus searches for border neurons, old (whole grid by the direct path)
vs new (fast-path ranking, each border neuron's best ``border_refine`` re-scored by the direct
path), side by side in one run; prints a table (not a test).

Border neurons (``TwinResponseModel.border_mask``: RF within the core's hidden reach of the
canvas edge) are most neurons of a briefly trained twin on a 36 x 64 canvas. The old search cost
B direct evaluations (one core forward each) per border neuron, B = grid size; the new one costs
``border_refine``. Accuracy: on the border neurons, the whole grid's direct table against the
fast path's ranking, for several K: the fraction of neurons whose best of the fast path's K best
(re-scored directly) is the direct optimum, and the ratio of its direct response to the direct
optimum's (median, min). K = 1 is the fast path alone. Then the time of each experiment of the
battery (``twin_adapter.run_battery``), to show what dominates after the fix.

1. Simulate a virtual V1 (``simulator.simulate_scans``: one scan), train a cpu-preset twin for
   ``--epochs`` (cached in the temp folder, see ``common.train``).
2. Optimal Gabor (``GaborGrid.cpu``) and optimal DoG (``DoGGrid.cpu``) of every neuron through
   ``twin_adapter.optimal_gabor`` / ``optimal_dog``: new (default ``BORDER_REFINE``), then old
   (``border_refine=None``), then new again (its time is the mean of the two), then the accuracy
   tables on the border neurons.

    .venv/bin/python benchmarks/border.py --neurons 300 --epochs 1 --threads 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import architecture, train

from insilico import search, twin_adapter
from insilico.model import pixels_per_degree
from insilico.twin_adapter import TwinResponseModel


def log(*a):
    print(*a, flush=True)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def rank_accuracy(direct: torch.Tensor, fast: torch.Tensor, ks) -> list[tuple]:
    """For each K of ``ks``: (K, fraction of neurons whose best of the fast path's K best, by
    direct response, is the direct optimum, median and min of its direct response / the direct
    optimum). direct, fast: (B, n) response tables of the same grid and neurons."""
    best_val, best = direct.max(0)
    order = fast.argsort(0, descending=True)
    rows = []
    for k in ks:
        cand = order[: min(k, len(order))]  # (k, n)
        vals = direct.gather(0, cand)
        val, j = vals.max(0)
        same = (cand.gather(0, j[None])[0] == best) | (val == best_val)
        ratio = (val / best_val).numpy()
        rows.append((k, float(same.float().mean()), float(np.median(ratio)), float(ratio.min())))
    return rows


def compare(name, find, fn, model, grid, ks, rows):
    """Old vs new search (``find``: twin_adapter's, ``fn``: the search module's) of all neurons
    of ``model``, and the accuracy of K candidates on its border neurons; appends table rows."""
    border = model.border_mask()
    with torch.no_grad():
        new1, t_new1 = timed(lambda: find(model, grid))
        old, t_old = timed(lambda: find(model, grid, border_refine=None))
        new2, t_new2 = timed(lambda: find(model, grid))
        fast_kw = dict(respond=model.fast_respond(), center=model.center)
        _, t_fast = timed(lambda: fn(model, grid, **fast_kw))
        sub = model.subset(np.flatnonzero(border))
        (_, direct), t_table = timed(lambda: fn(sub, grid, return_responses=True))
        _, fast = fn(model, grid, return_responses=True, **fast_kw)
    t_new = (t_new1 + t_new2) / 2
    keys = search.GABOR_KEYS if name == "gabor" else search.DOG_KEYS
    b = np.flatnonzero(border)
    same = np.ones(len(b), bool)
    for k in keys:
        same &= np.isclose(new1[k].values[b], old[k].values[b], atol=1e-6)
    ratio = new1.response.values[b] / old.response.values[b]
    k_def = twin_adapter.BORDER_REFINE
    rows += [
        (f"{name}: grid size B", f"{len(grid)}"),
        (f"{name}: old (border neurons: whole grid direct) [s]", f"{t_old:.1f}"),
        (f"{name}: new (border: fast ranking, {k_def} best re-scored) [s]", f"{t_new:.1f}"),
        (f"{name}: speed-up old / new", f"{t_old / t_new:.1f}x"),
        (f"{name}: . fast path alone, all neurons [s]", f"{t_fast:.1f}"),
        (f"{name}: . direct whole-grid table of the border neurons [s]", f"{t_table:.1f}"),
        (f"{name}: new = old choice, border neurons", f"{same.sum()}/{len(b)}"),
        (
            f"{name}: new / old direct response, border (median, min)",
            f"{np.median(ratio):.4f} {ratio.min():.4f}",
        ),
    ]
    for k, frac, med, lo in rank_accuracy(direct, fast[:, border], ks):
        rows.append(
            (
                f"{name}: K={k:>3}{' (fast alone)' if k == 1 else ''}: same / ratio median, min",
                f"{frac:.3f} {med:.4f} {lo:.4f}",
            )
        )


def battery_times(model, gabors, rows):
    """Time of each experiment of the pipeline's battery on all neurons of ``model``."""
    from insilico import experiments

    params = search.params_of(gabors, search.GABOR_KEYS)
    runs = [
        ("orientation (16)", experiments.orientation_tuning, (16,)),
        ("phase (16)", experiments.phase_tuning, (16,)),
        ("plaid (25)", experiments.plaid_tuning, ()),
    ]
    with torch.no_grad():
        for name, fn, args in runs:
            _, t = timed(
                lambda f=fn, a=args: twin_adapter.per_neuron_experiment(f, model, params, *a)
            )
            rows.append((f"battery: {name}, border direct [s]", f"{t:.1f}"))
        _, t = timed(lambda: twin_adapter.size_contrast_tuning(model, params))
        rows.append(("battery: size-contrast (40), all neurons direct [s]", f"{t:.1f}"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--neurons", type=int, default=300)
    ap.add_argument("--n-train", type=int, default=1500)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--battery", action="store_true", help="also time the battery")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from simulator import simulate_scans

    sims = simulate_scans(
        n_scans=1,
        n_neurons=args.neurons,
        n_train=args.n_train,
        n_validation=args.n_train // 5,
        n_test_images=10,
        n_repeats=2,
        seed=args.seed,
    )
    twin, val, secs = train(architecture({}), sims, args.epochs, args.seed)
    log(f"twin: {args.epochs} epochs, validation corr {val:.3f}")
    model = TwinResponseModel(twin, sims[0].name)
    border = model.border_mask()
    ppd = pixels_per_degree(model)
    rows = [
        ("neurons", f"{model.n_neurons}"),
        (
            f"border neurons (RF within {twin.hidden_reach} px of the edge)",
            f"{border.sum()} ({border.mean():.0%})",
        ),
    ]
    compare(
        "gabor",
        twin_adapter.optimal_gabor,
        search.optimal_gabor,
        model,
        search.GaborGrid.cpu(ppd),
        args.ks,
        rows,
    )
    compare(
        "dog",
        twin_adapter.optimal_dog,
        search.optimal_dog,
        model,
        search.DoGGrid.cpu(ppd),
        args.ks,
        rows,
    )
    if args.battery:
        battery_times(model, twin_adapter.optimal_gabor(model, search.GaborGrid.cpu(ppd)), rows)
    w = max(len(r[0]) for r in rows)
    print("\n" + "=" * (w + 26))
    for name, value in rows:
        print(f"{name:<{w}}  {value:>24}")
    print("=" * (w + 26))


if __name__ == "__main__":
    main()
