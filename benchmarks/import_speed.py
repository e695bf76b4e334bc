"""How fast a large scan goes into the database and comes back out.

Builds an in-memory scan (default 8,000 neurons x 6,000 trials, 36 x 64 images), inserts it
with `schemas.recording.insert_recording`, reads it back with `load_scan`, and prints the
seconds and the throughput. Runs against the configured server in a throw-away schema prefix.

    .venv/bin/python benchmarks/import_speed.py [--neurons 8000] [--trials 6000]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def make_recording(n_neurons: int, n_trials: int, seed: int = 0):
    from v1twin.recording import Recording

    rng = np.random.default_rng(seed)
    # 100 test images x 10 repeats and 500 validation trials from 6,000 trials up, fewer below
    n_test_images = min(100, max(2, n_trials // 60))
    n_test, n_validation = 10 * n_test_images, min(500, max(1, n_trials // 12))
    if n_trials - n_test - n_validation < 1:
        raise SystemExit(f"--trials {n_trials}: too few for train, validation and test tiers")
    tiers = np.array(
        ["train"] * (n_trials - n_test - n_validation)
        + ["validation"] * n_validation
        + ["test"] * n_test
    )
    image_ids = np.concatenate(
        [np.arange(n_trials - n_test), 10**6 + np.repeat(np.arange(n_test_images), 10)]
    )
    index = np.unique(image_ids)
    return Recording(
        90000,
        1,
        1,
        responses=rng.poisson(1.0, (n_trials, n_neurons)).astype(np.float32),
        tiers=tiers,
        image_ids=image_ids,
        images=rng.uniform(0, 255, (len(index), 36, 64)).astype(np.float32),
        image_index=index,
        unit_ids=np.arange(n_neurons),
        area=np.full(n_neurons, "V1"),
        layer=np.full(n_neurons, "L2/3"),
        motor_coordinates=np.zeros((n_neurons, 3), np.float32),
        source="benchmark",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--neurons", type=int, default=8000)
    parser.add_argument("--trials", type=int, default=6000)
    args = parser.parse_args()
    import schemas

    prefix = f"bench{os.getpid()}"
    recording = schemas.activate(prefix)["recording"]
    try:
        rec = make_recording(args.neurons, args.trials)
        megabytes = rec.responses.nbytes / 2**20
        t0 = time.perf_counter()
        recording.insert_recording(rec)
        t_insert = time.perf_counter() - t0
        t0 = time.perf_counter()
        back = recording.load_scan(rec.scan_key)
        t_load = time.perf_counter() - t0
        assert np.array_equal(back["responses"], rec.responses)
        print(
            f"scan of {args.neurons} neurons x {args.trials} trials ({megabytes:.0f} MiB of "
            f"responses)"
        )
        print(f"insert: {t_insert:6.1f} s  ({megabytes / t_insert:6.1f} MiB/s)")
        print(f"load:   {t_load:6.1f} s  ({megabytes / t_load:6.1f} MiB/s)")
    finally:
        schemas.drop_all(prefix)


if __name__ == "__main__":
    main()
