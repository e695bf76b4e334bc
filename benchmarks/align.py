"""Time and peak memory of CyclicAligner.fit for N = 1,000, 10,000 and 50,000 bar codes of
F 16 x O 8 = 128 dimensions (ICLR model size).

Each N runs in a fresh subprocess, so peak memory is that run's own: ru_maxrss of the process
(includes the Python/torch baseline, printed separately) on the CPU, torch.cuda.max_memory_allocated
on a GPU. The beta sweep is reduced (``--betas``, default 3 instead of the paper's 20) and the
iterations are capped (``--max-iter``) to keep the 50k run to a few minutes; time per step is the
number that scales.

    python benchmarks/align.py [--sizes 1000 10000 50000] [--betas 3] [--max-iter 300]

``--ari demo_out/data/truth.csv`` instead compares, on the virtual V1 that ``make demo`` fitted,
the adjusted Rand index of k-means clusters (k = number of true types) against the true cell
types for the unaligned and the aligned bar codes, read from the database.
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def synthetic_barcodes(n, features=16, orientations=8, n_types=10, noise=0.1, seed=0):
    """n bar codes (n, F, O): n_types random prototypes, each rotated by a random angle, plus
    noise."""
    from clustering.rotation import rotate

    rng = np.random.default_rng(seed)
    prototypes = rng.standard_normal((n_types, features, orientations))
    x = rotate(prototypes[rng.integers(0, n_types, n)], rng.uniform(0, 2 * np.pi, n))
    return (x + noise * rng.standard_normal(x.shape)).astype(np.float32)


def run_one(n, n_betas, max_iter):
    """Fit once in this process; return a dict of measurements."""
    import torch

    from clustering.alignment import CyclicAligner

    x = synthetic_barcodes(n)
    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    aligner = CyclicAligner(
        betas=np.logspace(-3, 1, n_betas),
        max_iter=max_iter,
        refine_iter=max_iter // 2,
        progress=False,
    )
    start = time.perf_counter()
    aligner.fit(x)
    seconds = time.perf_counter() - start
    cuda = torch.cuda.is_available()
    peak_mb = (
        torch.cuda.max_memory_allocated()
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ) / 2**20
    steps = int(aligner.losses_["n_iter"].sum())
    return dict(
        n=n,
        seconds=seconds,
        steps=steps,
        peak_mb=peak_mb,
        baseline_mb=0.0 if cuda else baseline_mb,
        device="cuda" if cuda else f"cpu ({torch.get_num_threads()} threads)",
        temperature=aligner.temperature_,
        beta=aligner.beta_,
    )


def ari_section(truth_csv, n_init=20):
    """ARI of clusters vs true types: raw bar codes vs bar codes aligned by the stored Alignment."""
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score

    import schemas
    from clustering.mixture import fit_clusters
    from schemas.clustering import fetch_aligned, fetch_barcodes

    clustering = schemas.activate()["clustering"]
    keys = clustering.Alignment().keys(order_by="KEY")
    if not keys:
        sys.exit("no Alignment in the database: run `make demo` first")
    truth = pd.read_csv(truth_csv)
    types = {(str(r.scan), int(r.unit_id)): r.type for r in truth.itertuples()}
    neurons, raw = fetch_barcodes(keys[0])
    _, aligned, _ = fetch_aligned(keys[0])
    labels = [types[(n["scan_key"], n["unit_id"])] for n in neurons]
    k = len(set(labels))
    print(
        f"{len(labels)} neurons of {k} true types; k-means with k = {k}, {n_init} initialisations"
    )
    for name, x in (("unaligned", raw), ("aligned", aligned)):
        clusters, _ = fit_clusters(x, "kmeans", k, random_state=0, n_init=n_init)
        print(f"  ARI against true types, {name:9}: {adjusted_rand_score(labels, clusters):.3f}")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument(
        "--betas", type=int, default=3, help="number of log-spaced betas in [1e-3, 10] (paper: 20)"
    )
    parser.add_argument("--max-iter", type=int, default=300, help="Adam steps per beta at most")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--ari", metavar="TRUTH_CSV", help="the ARI comparison on the demo's virtual V1"
    )
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.betas, args.max_iter)))
        return
    if args.ari:
        ari_section(args.ari)
        return
    print(
        f"CyclicAligner.fit, F 16 x O 8, reduced sweep: {args.betas} betas (paper: 20), "
        f"max {args.max_iter} steps per beta + {args.max_iter // 2} refinement steps; "
        "Euclidean pairwise term on 4 random partners per neuron per step."
    )
    print(
        f"{'N':>7} {'seconds':>9} {'steps':>6} {'ms/step':>8} {'peak MB':>9} {'base MB':>8} "
        f"{'x time':>7} {'x ms/step':>9} {'x mem':>6}  device"
    )
    previous = None
    for n in args.sizes:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(n),
                "--betas",
                str(args.betas),
                "--max-iter",
                str(args.max_iter),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["ms_step"] = 1e3 * row["seconds"] / max(row["steps"], 1)
        ratios = (
            ("", "", "")
            if previous is None
            else (
                f"{row['seconds'] / previous['seconds']:.1f}",
                f"{row['ms_step'] / previous['ms_step']:.1f}",
                f"{row['peak_mb'] / previous['peak_mb']:.2f}",
            )
        )
        print(
            f"{n:>7} {row['seconds']:>9.1f} {row['steps']:>6} {row['ms_step']:>8.1f} "
            f"{row['peak_mb']:>9.0f} "
            f"{row['baseline_mb']:>8.0f} {ratios[0]:>7} {ratios[1]:>9} {ratios[2]:>6}  "
            f"{row['device']}",
            flush=True,
        )
        previous = row


if __name__ == "__main__":
    main()
