"""Benchmark: which core option recovers which true cell type (issue 26).

On small simulated scans of each population (``simulate_scans(n_scans=--scans, ...)``), trains
the "cpu" twin preset, variants of it (``VARIANTS``: one option changed each, plus combinations)
and the neuralpredictors Sensorium baseline of ``benchmarks/peer.py`` (its builder and training
recipe, imported; its input is pooled by the preset's downsample, like the twin's) on 1 torch
thread, each for ``--epochs`` at most, or without it each to its own recipe's end (the twin:
the preset's early stopping and epoch cap; the baseline: early stopping, 200 epochs at most).
Prints per model the median test FEVE (``twin.metrics``) of each true cell type (the simulator's
``truth["type"]``), of the simple cells in the top third of their spatial frequencies ("simple
hi-sf"), and of all neurons, with the test correlation, parameters, epochs run and the best
epoch (validation correlation peak), seconds per epoch (validation included) and seconds to the
best epoch (best epoch x seconds per epoch). Models are trained one after another in one
process; the load average is printed beside each.

    .venv/bin/python benchmarks/sweep_core.py --epochs 10          # default + fine, all variants
    .venv/bin/python benchmarks/sweep_core.py --quick              # smoke run (seconds)
    .venv/bin/python benchmarks/sweep_core.py --variants cpu --scans 2 --trials 4000  # converged

Imports ``peer`` and ``common`` as sibling modules: run it with the venv's python.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
import torch
from common import architecture
from peer import baseline, baseline_inputs, fit_baseline, predict_baseline

from simulator import TYPES, simulate_scans
from simulator.population import POPULATIONS
from twin.data import ScanData
from twin.metrics import prediction_scores
from twin.presets import get_preset
from twin.training import build_model, fit
from v1twin.interop.neuralpredictors import load

# name -> changes to the cpu preset's architecture (merged by common.architecture)
VARIANTS = {
    "cpu": {},
    "features 8": {"core": {"features": (8, 8, 8)}},
    "elu1": {"output": "elu1"},
    "dilation 1": {"core": {"dilations": (1, 1, 1)}},
    "kernels 13,5,5": {"core": {"kernel_sizes": (13, 5, 5)}},
    "feature_l1 1e-3": {"readout": {"feature_l1": 1e-3}},
    "elu1 + dil 1": {"output": "elu1", "core": {"dilations": (1, 1, 1)}},
    "8 + elu1": {"output": "elu1", "core": {"features": (8, 8, 8)}},
    "8 + elu1 + dil 1": {"output": "elu1", "core": {"features": (8, 8, 8), "dilations": (1, 1, 1)}},
    # the last layer keeps dilation 3 (reach 24 px) but gets all 5 Hermite orders of its 5 x 5 taps
    "hermite 5,3,5": {"core": {"n_hermite": (5, 3, 5)}},
    "elu1 + hermite 5,3,5": {"output": "elu1", "core": {"n_hermite": (5, 3, 5)}},
    # undilated, with a larger last kernel for a reach of 20 px instead of 16
    "elu1 + dil 1 + 9,5,9": {
        "output": "elu1",
        "core": {"dilations": (1, 1, 1), "kernel_sizes": (9, 5, 9)},
    },
}
BASELINE = "Sensorium baseline"
HI_SF = "simple hi-sf"


def log(*a):
    print(*a, flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--populations", nargs="+", default=["default", "fine"], choices=POPULATIONS)
    p.add_argument("--neurons", type=int, default=300)
    p.add_argument("--trials", type=int, default=2000, help="train trials")
    p.add_argument("--test-images", type=int, default=100)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--scans", type=int, default=1, help="scans per population")
    p.add_argument("--epochs", type=int, default=None, help="epoch cap (default: each recipe's)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--no-baseline", action="store_true", help="skip the Sensorium baseline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="smoke run: 40 neurons, 200 trials, 1 ep")
    args = p.parse_args(argv)
    if args.quick:
        args.neurons, args.trials, args.epochs, args.test_images, args.repeats = 40, 200, 1, 20, 4
    return args


def groups(truth) -> dict[str, np.ndarray]:
    """Neuron masks (N,) per true type, plus the simple cells in the top third of their sf."""
    types = truth["type"].to_numpy()
    present = [t for t in TYPES if t in set(types)] + sorted(set(types) - set(TYPES))
    out = {t: types == t for t in present}
    if "simple" in out:
        sf = truth["sf"].to_numpy()
        out[HI_SF] = out["simple"] & (sf >= np.quantile(sf[out["simple"]], 2 / 3))
    return out


def train_twin(variant: dict, data: list[ScanData], epochs: int | None, seed: int):
    """A twin of the cpu preset changed by ``variant``, fitted with the cpu preset's training
    settings (for at most ``epochs`` if given). Returns (twin, fit history)."""
    twin = build_model(architecture(variant), data, seed=seed)
    cfg = get_preset("cpu").train
    cfg.max_epochs = cfg.max_epochs if epochs is None else epochs
    cfg.device, cfg.seed = "cpu", seed
    return twin, fit(twin, data, cfg, progress=False)


def sweep(sims, names: list[str], with_baseline: bool, epochs: int | None, seed: int) -> dict:
    """Fit every model to the simulated scans. Returns {model: {"feve", "corr", "params",
    "epochs", "best", "s_per_epoch", "load"}} with per-neuron (N,) "feve" and "corr", the scans'
    neurons concatenated in order."""
    data = [ScanData(s.name, s.images, s.responses, s.tiers, s.image_ids) for s in sims]
    tests = [d.select("test") for d in data]
    rows = {}
    for name in names:
        t0 = time.perf_counter()
        twin, hist = train_twin(VARIANTS[name], data, epochs, seed)
        seconds = time.perf_counter() - t0
        scores = [
            prediction_scores(twin.predict(twin.standardize(t.images), d.name), t)
            for d, t in zip(data, tests)
        ]
        rows[name] = _row(scores, twin, len(hist["epoch"]), hist["best_epoch"], seconds)
        log(f"  {name}: {rows[name]['epochs']} epochs, {rows[name]['s_per_epoch']:.1f} s/epoch")
    if with_baseline:
        pool = get_preset("cpu").downsample
        inputs = baseline_inputs(build_model("cpu", data).standardize, pool)
        coords = {s.name: s.cell_motor_coordinates for s in sims}
        model = baseline(data, coords, seed, inputs(tests[0].images[:1]).shape[2:])
        bh = fit_baseline(model, data, inputs, epochs, torch.device("cpu"))
        scores = [
            prediction_scores(
                predict_baseline(model, inputs(t.images), d.name, bh["std"][d.name], "cpu"), t
            )
            for d, t in zip(data, tests)
        ]
        rows[BASELINE] = _row(scores, model, bh["epochs"], bh["best_epoch"], bh["seconds"])
    return rows


def _row(scores: list[dict], model, epochs: int, best: int, seconds: float) -> dict:
    return {
        "feve": np.concatenate([s["feve"] for s in scores]),
        "corr": np.concatenate([s["test_correlation"] for s in scores]),
        "params": sum(p.numel() for p in model.parameters()),
        "epochs": epochs,
        "best": best,
        "s_per_epoch": seconds / max(epochs, 1),
        "load": os.getloadavg()[0],
    }


def table(rows: dict, masks: dict) -> list[str]:
    """Markdown rows: per model the median FEVE per group and overall, and the costs."""
    cols = [f"{g} (n={m.sum()})" for g, m in masks.items()]
    head = ["model", *cols, "all", "test corr", "params", "epochs (best)", "s/epoch"]
    head += ["s to best", "load"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        per = [f"{np.median(r['feve'][m]):.3f}" for m in masks.values()]
        cells = [name, *per, f"{np.median(r['feve']):.3f}", f"{np.median(r['corr']):.3f}"]
        cells += [f"{r['params']:,}", f"{r['epochs']} ({r['best']})", f"{r['s_per_epoch']:.1f}"]
        cells.append(f"{r['best'] * r['s_per_epoch']:.0f}")
        lines.append("| " + " | ".join(cells + [f"{r['load']:.1f}"]) + " |")
    return lines


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.no_baseline:
        load()  # neuralpredictors, fails early when it is missing
    for pop in args.populations:
        sims = simulate_scans(
            n_scans=args.scans,
            n_neurons=args.neurons,
            n_train=args.trials,
            n_validation=max(args.trials // 8, 1),
            n_test_images=args.test_images,
            n_repeats=args.repeats,
            seed=args.seed,
            population=pop,
        )
        cap = "each recipe's own" if args.epochs is None else f"{args.epochs} at most"
        log(
            f"population {pop}: {args.scans} scan(s) x {args.neurons} neurons, {args.trials} "
            f"train trials, {args.test_images} test images x {args.repeats}; epochs: {cap}; "
            f"{torch.get_num_threads()} thread(s)"
        )
        rows = sweep(sims, args.variants, not args.no_baseline, args.epochs, args.seed)
        truth = pd.concat([s.truth for s in sims], ignore_index=True)
        log(f"\nmedian test FEVE by true type, population {pop!r}")
        log("\n".join(table(rows, groups(truth))) + "\n")


if __name__ == "__main__":
    main()
