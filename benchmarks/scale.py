"""Sensorium scale: import and every pipeline stage on a synthetic data set of Sensorium's shape.

Writes 5 scans x N neurons x 6,000 trials with 144 x 256 images (Sensorium 2022's shape; 100
test images x 10 repeats, 500 validation trials), once with N / 4 neurons and once with N, and
runs ``v1twin import sensorium`` and ``v1twin populate STAGE`` for each stage, each in its own
child process, with a tiny model and the smallest grids set through the normal config
(:data:`TINY`). Per step it prints wall seconds, the child's peak resident memory (its
``ru_maxrss``, read by a small launcher; the PostgreSQL server's memory is not included)
and the rows written.

Data: one set of uint8 images (random 36 x 64 pixels, each repeated 4 x 4), written as the
first scan's ``data/images`` files and hard-linked into every other scan; responses are
non-negative floats of a linear-nonlinear model (a random filter per neuron on the 18 x 32
pooled image, softplus, gamma noise), deconvolved-trace-like and stimulus dependent.
Everything runs in the worktree's database under a throw-away schema prefix, dropped at the end.

    .venv/bin/python benchmarks/scale.py --out /work/scale_data [--neurons 8000] [--scans 5]
        [--trials 6000] [--sizes 0.25 1] [--stage-timeout 3600]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

#: The tiny model and the smallest grids: a [model]/[alignment]/[clustering]/[insilico] config.
TINY = """
[model]
max_epochs = 1
glm_alphas = 4
schedule = "cosine"
n_seeds = 1
[alignment]
n_betas = 2
max_iter = 20
refine_iter = 20
[clustering]
heldout_max_k = 4
[insilico]
grid = "cpu"
refine = 0
mei_steps = 2
energies = [13.0]
"""

HEIGHT, WIDTH, BLOCK = 144, 256, 4  # Sensorium's images; random pixels in 4 x 4 blocks
STAGES = ("model", "clustering", "insilico", "analysis")


def design(n_trials: int) -> tuple[np.ndarray, np.ndarray]:
    """Tiers (T,) and image ids (T,): 100 test images x 10 repeats, 500 validation trials."""
    n_test_images = min(100, max(2, n_trials // 60))
    n_test, n_val = 10 * n_test_images, min(500, max(1, n_trials // 12))
    tiers = np.array(
        ["train"] * (n_trials - n_test - n_val) + ["validation"] * n_val + ["test"] * n_test
    )
    ids = np.concatenate(
        [np.arange(n_trials - n_test), 10**6 + np.repeat(np.arange(n_test_images), 10)]
    )
    return tiers, ids


def small_images(image_ids: np.ndarray, seed: int = 0) -> np.ndarray:
    """(T, 36, 64) uint8 per trial; repeats of an id are the same image."""
    rng = np.random.default_rng(seed)
    index, inverse = np.unique(image_ids, return_inverse=True)
    pool = rng.integers(0, 256, (len(index), HEIGHT // BLOCK, WIDTH // BLOCK), dtype=np.uint8)
    return pool[inverse]


def ln_responses(small: np.ndarray, n_neurons: int, seed: int) -> np.ndarray:
    """(T, N) float32 >= 0: softplus of a random linear filter per neuron on the 2 x 2 pooled
    image, times gamma noise (shape 2, mean 1)."""
    rng = np.random.default_rng(seed)
    t, h, w = small.shape
    x = small.reshape(t, h // 2, 2, w // 2, 2).mean((2, 4)).reshape(t, -1).astype(np.float32)
    x = (x - x.mean()) / x.std()
    filters = rng.standard_normal((x.shape[1], n_neurons), dtype=np.float32)
    drive = x @ (filters / np.sqrt(x.shape[1]))  # (T, N), unit variance
    rate = np.logaddexp(0, 2 * drive - 1).astype(np.float32)
    return (rate * rng.gamma(2.0, 0.5, rate.shape)).astype(np.float32)


def write_scans(out: Path, n_neurons: int, n_scans: int, n_trials: int, shared: Path | None):
    """Write the scans of one size; the images are written once (in ``shared``, or in this
    size's first scan when ``shared`` is None) and hard-linked. Returns (folders, image source)."""
    from v1twin.sensorium import write_sensorium

    tiers, ids = design(n_trials)
    small = small_images(ids)
    folders = []
    for s in range(n_scans):
        folder = out / f"static{30000 + n_neurons}-1-{s + 1}-synthetic"
        if folder.exists():
            shutil.rmtree(folder)
        own_images = shared is None
        images = None
        if own_images:
            images = np.repeat(np.repeat(small, BLOCK, 1), BLOCK, 2)[:, None]  # (T, 1, H, W)
        write_sensorium(
            folder,
            images=images,
            responses=ln_responses(small, n_neurons, seed=1000 * n_neurons + s),
            tiers=tiers,
            image_ids=ids,
            unit_ids=np.arange(n_neurons),
            cell_motor_coordinates=np.zeros((n_neurons, 3), np.float32),
            area=np.full(n_neurons, "V1"),
            layer=np.full(n_neurons, "L2/3"),
            animal_id=30000 + n_neurons,
            session=1,
            scan_idx=s + 1,
        )
        if own_images:
            shared = folder
        else:
            _link_images(shared, folder)
        folders.append(folder)
    return folders, shared


def _link_images(source: Path, folder: Path) -> None:
    for sub in ("data/images", "meta/statistics/images/all"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for f in (source / sub).iterdir():
            os.link(f, folder / sub / f.name)


#: Runs argv[2:] and writes its peak RSS (KiB) to argv[1]. A child forked from this benchmark
#: directly would report at least the benchmark's own RSS at the fork (Linux carries ru_maxrss
#: over fork and exec), so each step is started from this small launcher instead.
LAUNCHER = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
    "sys.exit(rc)"
)


def run_child(cmd: list[str], log, timeout: float, rss_file: Path) -> tuple[float, float, int]:
    """Run ``cmd`` (output to ``log``) from :data:`LAUNCHER`; returns (seconds, its peak RSS in
    GiB (nan if killed), exit status; killed at ``timeout``)."""
    t0 = time.perf_counter()
    rss_file.unlink(missing_ok=True)
    launcher = [sys.executable, "-c", LAUNCHER, str(rss_file), *cmd]
    proc = subprocess.Popen(launcher, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        status = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the launcher and the step
        status = proc.wait()
    rss = int(rss_file.read_text()) / 2**20 if rss_file.exists() else float("nan")
    return time.perf_counter() - t0, rss, status


def count_rows(names: list[str]) -> int:
    """Rows of the named tables (``module.Table``) and their part tables."""
    import importlib

    total = 0
    for name in names:
        module, cls = name.split(".")
        table = getattr(importlib.import_module(f"schemas.{module}"), cls)()
        total += len(table) + sum(len(p) for p in table.parts(as_objects=True))
    return total


def measure(folders: list[Path], config: Path, log, timeout: float) -> list[dict]:
    """Import the folders and populate every stage, each in a child process."""
    from v1twin import pipeline

    v1twin = str(Path(sys.executable).with_name("v1twin"))
    steps = [("import", [v1twin, "import", "sensorium", "-q", *map(str, folders)])]
    steps += [(s, [v1twin, "populate", s, "-q", "--config", str(config)]) for s in STAGES]
    tables = {"import": ["recording.Scan"], **{s: list(pipeline.STAGES[s]) for s in STAGES}}
    results = []
    for name, cmd in steps:
        before = count_rows(tables[name])
        print(f"  {name} ...", flush=True)
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        seconds, rss, status = run_child(cmd, log, timeout, config.with_name("rss.txt"))
        row = dict(
            step=name, seconds=seconds, rss=rss, rows=count_rows(tables[name]) - before, rc=status
        )
        print(
            f"  {name:10} {seconds:8.0f} s {rss:6.2f} GiB {row['rows']:9d} rows  exit {status}",
            flush=True,
        )
        results.append(row)
        if status != 0 and name == "import":
            break  # a stage that failed or ran out of time: the next ones use what it wrote
    return results


def table(results: dict[int, list[dict]]) -> str:
    """A markdown table: per step, seconds, peak RSS (GiB) and rows written at each size."""
    sizes = list(results)
    cols = [f"{what} N={n}" for what in ("s", "GiB", "rows") for n in sizes]
    lines = ["| step | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for step in ("import", *STAGES):
        found = {n: next((r for r in results[n] if r["step"] == step), None) for n in sizes}
        cells = []
        for fmt, field in (("{:.0f}", "seconds"), ("{:.2f}", "rss"), ("{:d}", "rows")):
            for n in sizes:
                r = found[n]
                fail = "" if r is None or r["rc"] == 0 else f" (exit {r['rc']})"
                cells.append("not run" if r is None else fmt.format(r[field]) + fail)
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for data and log")
    parser.add_argument("--neurons", type=int, default=8000, help="N, neurons per scan")
    parser.add_argument("--scans", type=int, default=5)
    parser.add_argument("--trials", type=int, default=6000)
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.25, 1.0], help="x N")
    parser.add_argument("--stage-timeout", type=float, default=3600.0, help="seconds per step")
    parser.add_argument("--keep", action="store_true", help="keep the data and the schemas")
    args = parser.parse_args()
    import schemas

    args.out.mkdir(parents=True, exist_ok=True)
    config = args.out / "tiny.toml"
    config.write_text(TINY)
    sizes = [max(1, round(f * args.neurons)) for f in args.sizes]
    results, shared = {}, None
    with open(args.out / "children.log", "a") as log:
        for n in sizes:
            prefix = f"scale{n}x{os.getpid()}"
            os.environ["V1TWIN_SCHEMA_PREFIX"] = prefix
            t0 = time.perf_counter()
            folders, shared = write_scans(args.out / f"n{n}", n, args.scans, args.trials, shared)
            print(f"N={n}: wrote {len(folders)} scans in {time.perf_counter() - t0:.0f} s")
            schemas.activate(prefix)
            try:
                results[n] = measure(folders, config, log, args.stage_timeout)
            finally:
                if not args.keep:
                    schemas.drop_all(prefix)
            print(table(results), flush=True)
    if not args.keep:  # the data; the children's output stays in children.log
        for n in sizes:
            shutil.rmtree(args.out / f"n{n}")


if __name__ == "__main__":
    main()
