"""Recovery on virtual V1s the pipeline was not tuned to: ARI and index Spearmans vs the truth.

For every population x seed it runs the whole pipeline through the command line, as a user would
(``v1twin simulate --population P --seed S``, ``v1twin import sensorium``, ``v1twin populate``,
``v1twin export``), each run in its own database schemas (``V1TWIN_SCHEMA_PREFIX``), then
compares the export with the simulator's truth: the adjusted Rand index of the clusters against
the true types, and the Spearman correlation of each in-silico index of the twin with the same
index measured by the same battery on the simulator. It prints one row per run, then the mean and
spread (min-max) per population and over all runs, against the targets (ARI >= 0.85, Spearman
>= 0.8).

    python benchmarks/recovery.py                                  # 4 populations x 2 seeds
    python benchmarks/recovery.py --populations fine skewed --seeds 0
    python benchmarks/recovery.py --quick                          # a smoke run: tiny and fast
    python benchmarks/recovery.py --config my.toml                 # pipeline parameters

A full run is a demo per population x seed (about 20 min each on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from simulator import simulate_scans
from simulator.population import POPULATIONS
from simulator.recovery import INDICES, recovery, true_indices

TARGETS = {"ari_clusters_vs_types": 0.85, **{f"spearman_{k}": 0.8 for k in INDICES}}
QUICK = dict(neurons=24, scans=1, trials=300)
QUICK_CONFIG = """
[model]
max_epochs = 2
[alignment]
n_betas = 2
max_iter = 20
[insilico]
mei_steps = 5
"""


def cli(*args: str, env: dict) -> None:
    """Run ``v1twin ARGS`` in a subprocess; raise with its output if it fails."""
    cmd = [sys.executable, "-m", "v1twin.cli", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(
            f"{' '.join(cmd[2:])} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )


def run_one(population: str, seed: int, out: Path, args, config: Path | None) -> dict:
    """One population x seed through the CLI; the recovery figures and the run's seconds."""
    prefix = f"recovery_{population}_{seed}_{os.getpid()}"
    env = {**os.environ, "V1TWIN_SCHEMA_PREFIX": prefix}
    size = ["--neurons", str(args.neurons), "--scans", str(args.scans)]
    size += ["--trials", str(args.trials)]
    t0 = time.perf_counter()
    data = out / "data"
    cli(
        "simulate",
        "--out",
        str(data),
        "--population",
        population,
        "--seed",
        str(seed),
        *size,
        env=env,
    )
    try:
        cli("import", "sensorium", *map(str, sorted(data.glob("static*"))), env=env)
        cli("populate", *(["--config", str(config)] if config else []), env=env)
        cli("export", "--out", str(out / "export"), env=env)
    finally:
        if not args.keep:
            import schemas

            schemas.drop_all(prefix)
    seconds = time.perf_counter() - t0
    scans = simulate_scans(
        n_scans=args.scans,
        n_neurons=args.neurons,
        n_train=args.trials,
        seed=seed,
        population=population,
    )
    neurons = pd.read_csv(out / "export" / "neurons.csv")
    result = recovery(neurons, true_indices(scans))
    result["n_clusters"] = int(neurons["cluster"].nunique())
    result["n_types"] = int(len(POPULATIONS[population].types))
    return {"population": population, "seed": seed, "seconds": seconds, **result}


def summarise(rows: pd.DataFrame) -> str:
    """Mean [min, max] per population and overall, and each target's verdict."""
    lines = []
    cols = list(TARGETS)
    groups = [(p, g) for p, g in rows.groupby("population", sort=False)] + [("ALL", rows)]
    for name, g in groups:
        cells = [f"{g[c].mean():.2f} [{g[c].min():.2f}, {g[c].max():.2f}]" for c in cols]
        lines.append(f"{name:<13}" + "".join(f"{c:>22}" for c in cells))
    lines.append("")
    for c, target in TARGETS.items():
        mean = rows[c].mean()
        lines.append(
            f"target {c} >= {target}: mean {mean:.3f} {'PASS' if mean >= target else 'MISS'}"
        )
    header = f"{'population':<13}" + "".join(f"{c.replace('spearman_', ''):>22}" for c in cols)
    return "\n".join([header, *lines])


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--populations", nargs="+", default=list(POPULATIONS), choices=list(POPULATIONS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--neurons", type=int, default=300, help="neurons per scan (default 300)")
    p.add_argument("--scans", type=int, default=2)
    p.add_argument("--trials", type=int, default=4000, help="train trials per scan")
    p.add_argument("--config", type=Path, help="pipeline parameters (TOML, see v1twin populate -h)")
    p.add_argument("--quick", action="store_true", help="a smoke run: tiny data, 2 epochs")
    p.add_argument("--out", type=Path, help="where runs are written (default: a temp folder)")
    p.add_argument("--keep", action="store_true", help="keep each run's database schemas")
    args = p.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="v1twin-recovery-"))
    config = args.config
    if args.quick:
        vars(args).update(QUICK)
        if config is None:
            config = root / "quick.toml"
            root.mkdir(parents=True, exist_ok=True)
            config.write_text(QUICK_CONFIG)
    rows = []
    for seed in args.seeds:  # seeds outer: a run stopped early has every population once
        for population in args.populations:
            print(f"{population} seed {seed}: simulate, import, populate, export ...", flush=True)
            row = run_one(population, seed, root / f"{population}-{seed}", args, config)
            rows.append(row)
            print(
                json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
            )
    table = pd.DataFrame(rows)
    table.to_csv(root / "recovery.csv", index=False)
    size = f"{args.neurons} neurons x {args.scans} scans, {args.trials} trials"
    print(f"\n{len(rows)} runs ({size}); mean [min, max]; rows in {root / 'recovery.csv'}")
    print(summarise(table))
    print(f"median seconds per run: {np.median(table['seconds']):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
