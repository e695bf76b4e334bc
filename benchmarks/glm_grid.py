"""Benchmark: the GLM baseline with DT's 48 penalties against coarser grids over the same range.

On the demo's virtual V1 (``simulate_scans(n_scans=1, n_neurons=300, n_train=4000, seed=0)``
by default), each grid's `twin.glm.PoissonGLM` (pooled 2x, the `cpu` twin's input) is fitted in
turn, interleaved over rounds in one process, and scored on the test tier: median single-trial
test correlation and FEVE (`twin.metrics`), and how far each neuron's test correlation moves
from the 48-alpha fit's. Prints fit seconds (median over rounds) and the ratio to 48 alphas.

    python benchmarks/glm_grid.py --alphas 48 24 12 --rounds 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from simulator import simulate_scans
from twin.data import ScanData
from twin.glm import DT_ALPHAS, PoissonGLM
from twin.metrics import prediction_scores


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--alphas", type=int, nargs="+", default=[48, 24, 12], help="grid sizes")
    p.add_argument("--neurons", type=int, default=300)
    p.add_argument("--trials", type=int, default=4000, help="train trials")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    p.add_argument("--downsample", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def grid(n: int) -> tuple:
    """n penalties log-spaced over DT's range (DT's own 48 for n = 48), as the pipeline's."""
    return DT_ALPHAS if n == len(DT_ALPHAS) else tuple(np.geomspace(DT_ALPHAS[0], DT_ALPHAS[-1], n))


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    (sim,) = simulate_scans(n_scans=1, n_neurons=args.neurons, n_train=args.trials, seed=0)
    scan = ScanData(sim.name, sim.images, sim.responses, sim.tiers, sim.image_ids)
    test = scan.select("test")
    seconds = {n: [] for n in args.alphas}
    scores = {}
    for _ in range(args.rounds):
        for n in args.alphas:
            start = time.perf_counter()
            glm = PoissonGLM(args.downsample, alphas=grid(n)).fit(scan)
            seconds[n].append(time.perf_counter() - start)
            scores[n] = prediction_scores(glm.predict(test.images), test)
    ref = args.alphas[0]
    print(
        f"GLM on 1 scan x {args.neurons} neurons, {args.trials} train trials, pooled "
        f"{args.downsample}x, {torch.get_num_threads()} thread(s); {args.rounds} interleaved rounds"
    )
    header = (
        f"{'alphas':>7}{'fit s':>8}{'ratio':>7}{'test corr':>11}{'FEVE':>8}"
        f"{'max |d corr|':>14}{'median |d corr|':>17}"
    )
    print(header)
    for n in args.alphas:
        t = float(np.median(seconds[n]))
        d = np.abs(scores[n]["test_correlation"] - scores[ref]["test_correlation"])
        print(
            f"{n:>7}{t:>8.1f}{np.median(seconds[ref]) / t:>7.2f}"
            f"{np.median(scores[n]['test_correlation']):>11.4f}{np.median(scores[n]['feve']):>8.4f}"
            f"{d.max():>14.4f}{np.median(d):>17.4f}"
        )
    print(f"(ratio: fit time of {ref} alphas / this grid's; d corr: against {ref} alphas)")


if __name__ == "__main__":
    main()
