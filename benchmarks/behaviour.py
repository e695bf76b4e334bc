"""Benchmark: does the twin learn the virtual V1's behaviour effects? (prints a table; not a test)

Simulates scans with behaviour (``simulate_scans(behavior=True)``: running speed scales every
neuron's stimulus drive by exp(0.4 per s.d.), the pupil centre moves every RF by 2 canvas px per
s.d.; `simulator.virtual_v1`) and trains, on the same data and seed, the cpu preset's twin

* "behaviour": with behaviour channels and the pupil shifter (``[model] behavior = true``);
* "no behaviour": the same twin without them (``behavior = false``);
* "behaviour, unstandardized": with them, trained on the recorded responses
  (``standardize_responses = false``).

Prints per variant: the best validation correlation (single trial), the test tier's mean
single-trial correlation and median FEVE (recorded units), and for twins with a shifter the RF
shift it learned for the pupil at +1 s.d. in x and in y (canvas px; truth: 2.0 along that axis).

    .venv/bin/python benchmarks/behaviour.py --neurons 100 --trials 2000 --epochs 12
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from simulator import simulate_scans
from simulator.virtual_v1 import EYE_SHIFT, PUPIL_REST, PUPIL_SD
from twin.data import ScanData
from twin.metrics import evaluate
from twin.presets import get_preset
from twin.training import build_model, fit

VARIANTS = {
    "behaviour": {"behavior": True, "standardize_responses": True},
    "no behaviour": {"behavior": False, "standardize_responses": True},
    "behaviour, unstandardized": {"behavior": True, "standardize_responses": False},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=1)
    parser.add_argument("--neurons", type=int, default=100)
    parser.add_argument("--trials", type=int, default=2000, help="train-tier trials per scan")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sims = simulate_scans(
        n_scans=args.scans,
        n_neurons=args.neurons,
        n_train=args.trials,
        n_validation=args.trials // 5,
        n_test_images=50,
        n_repeats=6,
        seed=args.seed,
        behavior=True,
    )
    data = [
        ScanData(s.name, s.images, s.responses, s.tiers, s.image_ids, s.behavior, s.pupil_center)
        for s in sims
    ]
    preset = get_preset("cpu")
    config = preset.train
    config.max_epochs, config.device, config.seed = args.epochs, "cpu", args.seed
    print(
        f"{args.scans} scan(s) x {args.neurons} neurons, {args.trials} train trials, "
        f"{args.epochs} epochs, cpu preset, {args.threads} thread(s); truth: RF shift "
        f"{EYE_SHIFT} px per pupil s.d."
    )
    print(
        f"{'variant':28} {'val corr':>9} {'test corr':>10} {'FEVE':>7} "
        f"{'shift x (dx, dy)':>18} {'shift y (dx, dy)':>18} {'seconds':>8}"
    )
    for name, options in VARIANTS.items():
        arch = {
            "core": preset.core,
            "readout": preset.readout,
            "downsample": preset.downsample,
            "output": preset.output,
            **options,
        }
        twin = build_model(arch, data, seed=args.seed)
        t0 = time.perf_counter()
        history = fit(twin, data, config, progress=False)
        seconds = time.perf_counter() - t0
        scores = [evaluate(twin, d) for d in data]
        test = np.concatenate([s["test_correlation"] for s in scores]).mean()
        feve = np.median(np.concatenate([s["feve"] for s in scores]))
        shift = ("-", "-")
        if data[0].name in twin.behavior:
            pupil = np.asarray(PUPIL_REST) + PUPIL_SD * np.eye(2)  # +1 s.d. in x, in y
            s = twin.rf_shift(data[0].name, pupil)
            shift = tuple(f"({r[0]:+.2f}, {r[1]:+.2f})" for r in s)
        print(
            f"{name:28} {history['best_val_corr']:9.3f} {test:10.3f} {feve:7.3f} "
            f"{shift[0]:>18} {shift[1]:>18} {seconds:8.0f}"
        )


if __name__ == "__main__":
    main()
