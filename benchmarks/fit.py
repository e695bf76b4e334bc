"""Benchmark: how well the twin ("cpu" preset) and the Poisson GLM predict a virtual V1.

Data: ``simulator.simulate_scans`` (default 2 scans x 300 neurons, 4000 train + 500
validation trials and 100 test images x 10 repeats per scan). The simulator knows each neuron's
noiseless rates, so the best possible prediction ("truth") is known and every model is also
scored against it:

* test correlation: single-trial correlation of prediction and response on the test tier;
* corr-to-average: correlation of the prediction with the response averaged over repeats;
* FEVE: fraction of explainable variance explained (``twin.metrics.feve``);
* fraction of ceiling: median over neurons of
  corr-to-average(model) / corr-to-average(true noiseless rates);
* FEVE of the true rates: a sanity check, ~1 up to sampling noise of the noise variance.

Target on the cpu preset: median FEVE >= 0.7 for the twin, and twin above the GLM on the
non-linear types (complex, simple_surround, complex_cross, contrast_energy).

    python benchmarks/fit.py            # full (~6-10 min on 2 CPU cores)
    python benchmarks/fit.py --quick    # 1 scan x 60 neurons x 800 trials, 2 epochs
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from simulator import TYPES, simulate_scans
from twin.data import ScanData
from twin.glm import PoissonGLM
from twin.metrics import evaluate, prediction_scores
from twin.presets import SCHEDULES, get_preset
from twin.training import build_model, fit, resolve_device

NONLINEAR = ("complex", "simple_surround", "complex_cross", "contrast_energy")
FEVE_TARGET = 0.7


def log(*a):
    print(*a, flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--scans", type=int, default=2, help="number of scans (default 2)")
    p.add_argument("--neurons", type=int, default=300, help="neurons PER SCAN (default 300)")
    p.add_argument(
        "--trials",
        type=int,
        default=4000,
        help="train trials per scan (default 4000); validation = trials // 8",
    )
    p.add_argument(
        "--test-images", type=int, default=100, help="test images per scan (default 100)"
    )
    p.add_argument("--repeats", type=int, default=10, help="repeats per test image (default 10)")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's max_epochs")
    p.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=None,
        help="override the preset's learning-rate schedule (twin.presets.TrainConfig)",
    )
    p.add_argument(
        "--anneal-epochs", type=int, default=None, help="override the preset's anneal_epochs"
    )
    p.add_argument("--lr", type=float, default=None, help="override the preset's (peak) lr")
    p.add_argument("--batch", type=int, default=None, help="override the preset's batch size")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 scan x 60 neurons x 800 trials, 40 test images, 2 epochs",
    )
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar during the twin's fit")
    args = p.parse_args(argv)
    if args.quick:
        args.scans, args.neurons, args.trials, args.test_images, args.epochs = 1, 60, 800, 40, 2
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t_total = time.perf_counter()
    preset = get_preset("cpu")
    cfg = preset.train
    for key, value in (
        ("max_epochs", args.epochs),
        ("schedule", args.schedule),
        ("lr", args.lr),
        ("batch_size", args.batch),
        ("anneal_epochs", args.anneal_epochs),
    ):
        if value is not None:
            setattr(cfg, key, value)
    cfg.seed = args.seed
    device = resolve_device(cfg.device)
    log(
        f"device: {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + f"; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )

    # --- data ----------------------------------------------------------------------------------
    t0 = time.perf_counter()
    n_val = max(args.trials // 8, 1)
    sims = simulate_scans(
        n_scans=args.scans,
        n_neurons=args.neurons,
        n_train=args.trials,
        n_validation=n_val,
        n_test_images=args.test_images,
        n_repeats=args.repeats,
        seed=args.seed,
    )
    data = [ScanData(s.name, s.images, s.responses, s.tiers, s.image_ids) for s in sims]
    log(
        f"data: {args.scans} scan(s) x {args.neurons} neurons; per scan {args.trials} train + "
        f"{n_val} validation trials, {args.test_images} test images x {args.repeats} repeats "
        f"(seed {args.seed}); simulated in {time.perf_counter() - t0:.1f} s"
    )

    # --- twin ----------------------------------------------------------------------------------
    log(
        f"twin: preset 'cpu' (core {preset.core}, downsample {preset.downsample}); lr {cfg.lr}, "
        f"batch {cfg.batch_size}, max_epochs {cfg.max_epochs}, schedule {cfg.schedule} "
        f"(patience {cfg.patience}, warm-up {cfg.warmup_epochs}, anneal {cfg.anneal_epochs} epochs)"
    )
    model = build_model(preset, data, seed=args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    t0 = time.perf_counter()
    hist = fit(model, data, cfg, progress=not args.no_progress)
    twin_seconds = time.perf_counter() - t0
    log(
        f"twin: {n_params} parameters; {len(hist['epoch'])} epochs, best epoch "
        f"{hist['best_epoch']}, "
        f"best val corr {hist['best_val_corr']:.3f} (initial {hist['initial_val_corr']:.3f}); "
        f"fit {twin_seconds:.1f} s on {hist['device']}"
    )
    log("twin: validation correlation per epoch (epoch: corr @ lr):")
    for epoch, corr, lr in zip(hist["epoch"], hist["val_corr"], hist["lr"]):
        log(f"  {epoch:3d}: {corr:.4f} @ {lr:.2e}")

    # --- GLM -----------------------------------------------------------------------------------
    glms, glm_seconds = [], 0.0
    for d in data:
        t0 = time.perf_counter()
        glms.append(PoissonGLM(downsample=model.downsample).fit(d))
        glm_seconds += time.perf_counter() - t0
    alphas = np.concatenate([g.alpha_ for g in glms])
    log(
        f"GLM: fitted {len(data)} scan(s) in {glm_seconds:.1f} s; chosen alpha median "
        f"{np.median(alphas):.3g} (range {alphas.min():.3g}-{alphas.max():.3g})"
    )

    # --- evaluation on the test tier -----------------------------------------------------------
    per = {"twin": [], "GLM": [], "truth": []}
    types, oracles = [], []
    for sim, d, glm in zip(sims, data, glms):
        test = d.select("test")
        m = d.mask("test")
        ev = evaluate(model, d)
        oracles.append(ev["oracle_correlation"])
        twin_pred = model.predict(model.standardize(test.images), d.name)
        check = prediction_scores(twin_pred, test)
        assert np.allclose(check["feve"], ev["feve"]), (
            "twin scores disagree with twin.metrics.evaluate"
        )
        per["twin"].append(
            {k: ev[k] for k in ("test_correlation", "correlation_to_average", "feve")}
        )
        per["GLM"].append(prediction_scores(glm.predict(test.images), test))
        per["truth"].append(prediction_scores(sim.rates[m], test))
        types.append(sim.truth["type"].to_numpy())
    types = np.concatenate(types)
    cat = {
        name: {k: np.concatenate([s[k] for s in lst]) for k in lst[0]} for name, lst in per.items()
    }
    ceiling = cat["truth"]["correlation_to_average"]
    safe = np.where(np.abs(ceiling) > 1e-6, ceiling, np.nan)
    for name in cat:
        cat[name]["fraction_of_ceiling"] = cat[name]["correlation_to_average"] / safe

    log("")
    log("Definitions (test tier; medians over all neurons of all scans):")
    log("  test corr     single-trial Pearson correlation of prediction and response")
    log("  corr-to-avg   correlation of the prediction with the response averaged over repeats")
    log("  FEVE          1 - (MSE - noise var) / (response var - noise var)")
    log(
        "  frac ceiling  median over neurons of corr-to-avg(model) / corr-to-avg(true noiseless "
        "rates);"
    )
    log(
        "                the simulator's noiseless rates are the best possible prediction (= 1 for "
        "truth)"
    )
    log(
        "  truth         the simulator's noiseless rates used as the prediction; its FEVE should "
        "be ~1"
    )
    log("")
    seconds = {"twin": twin_seconds, "GLM": glm_seconds, "truth": float("nan")}
    header = (
        f"{'model':<7}{'test corr':>11}{'corr-to-avg':>13}{'FEVE':>8}{'frac ceiling':>14}"
        f"{'fit s':>9}"
    )
    log(header)
    log("-" * len(header))
    for name, c in cat.items():
        sec = "-" if np.isnan(seconds[name]) else f"{seconds[name]:.1f}"
        log(
            f"{name:<7}{np.median(c['test_correlation']):>11.3f}{np.median(c['correlation_to_average']):>13.3f}"
            f"{np.median(c['feve']):>8.3f}{np.nanmedian(c['fraction_of_ceiling']):>14.3f}{sec:>9}"
        )
    oracle = np.concatenate(oracles)
    log(
        f"(leave-one-out oracle correlation of the data, median: {np.median(oracle):.3f}; "
        f"mean twin FEVE {cat['twin']['feve'].mean():.3f}, GLM {cat['GLM']['feve'].mean():.3f}, "
        f"truth {cat['truth']['feve'].mean():.3f})"
    )

    log("")
    log("Per true type (medians):")
    header = (
        f"{'type':<17}{'n':>5}{'FEVE twin':>11}{'FEVE GLM':>10}{'corr twin':>11}{'corr GLM':>10}"
        f"{'FEVE truth':>12}  twin>GLM"
    )
    log(header)
    log("-" * len(header))
    wins = {}
    for ty in TYPES:
        sel = types == ty
        if not sel.any():
            continue
        ft, fg = np.median(cat["twin"]["feve"][sel]), np.median(cat["GLM"]["feve"][sel])
        ct, cg = (
            np.median(cat["twin"]["test_correlation"][sel]),
            np.median(cat["GLM"]["test_correlation"][sel]),
        )
        wins[ty] = bool(ft > fg and ct > cg)
        tag = (
            "yes" if wins[ty] else ("FEVE only" if ft > fg else ("corr only" if ct > cg else "no"))
        )
        kind = " (non-linear)" if ty in NONLINEAR else ""
        log(
            f"{ty:<17}{sel.sum():>5}{ft:>11.3f}{fg:>10.3f}{ct:>11.3f}{cg:>10.3f}"
            f"{np.median(cat['truth']['feve'][sel]):>12.3f}  {tag}{kind}"
        )
    log("(twin>GLM: 'yes' when the twin's median FEVE and median test correlation are both higher)")

    log("")
    med_feve = float(np.median(cat["twin"]["feve"]))
    ok_feve = med_feve >= FEVE_TARGET
    nonlin = [ty for ty in NONLINEAR if ty in wins]
    ok_types = all(wins[ty] for ty in nonlin)
    log(
        f"target: twin median FEVE {med_feve:.3f} >= {FEVE_TARGET}: {'PASS' if ok_feve else 'FAIL'}"
    )
    log(
        f"target: twin > GLM on every non-linear type ({', '.join(nonlin)}): "
        f"{'PASS' if ok_types else 'FAIL'}"
        + ("" if ok_types else f" (not on {', '.join(ty for ty in nonlin if not wins[ty])})")
    )
    if args.quick:
        log("(--quick: a smoke run; the targets refer to the full default run)")
    log(f"total time: {time.perf_counter() - t_total:.1f} s on {device}")
    return 0 if (ok_feve and ok_types) else 1


if __name__ == "__main__":
    main()
