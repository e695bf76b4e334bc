"""Three workers started in the same instant on a fresh database, many times in a row.

Each run imports one small scan into a fresh schema prefix (recording tables only), starts
three ``v1twin worker clustering`` processes that are released together once all have
imported their modules (so every table, job queue and parameter set is declared or inserted
by workers racing each other), checks each worker's exit code and the rows the start-up
inserted, prints the stderr of any worker that failed, and drops the prefix. The last line is
the count of failed runs.

    .venv/bin/python benchmarks/simultaneous_start.py [--runs 50] [--workers 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the harness is the test's

EXPECTED = {"datasets": 1, "members": 1, "configs": 1, "alignment": 1, "clustering": 1, "queues": 4}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()

    from conftest import make_scan_arrays
    from test_concurrent_startup import TINY, start_together

    from schemas import connection
    from v1twin.sensorium import write_sensorium

    connection.connect()
    tmp = Path(tempfile.mkdtemp(prefix="simstart-"))
    folder = write_sensorium(
        tmp / "static11111-2-3-Test", animal_id=11111, session=2, scan_idx=3, **make_scan_arrays()
    )
    config = tmp / "tiny.toml"
    config.write_text(TINY)
    failed = 0
    t0 = time.perf_counter()
    for run in range(1, args.runs + 1):
        start = start_together(folder, config, args.workers)
        problems = start.failures + (
            [f"rows after start-up: {start.counts}"] if start.counts != EXPECTED else []
        )
        failed += bool(problems)
        status = "FAILED" if problems else "ok"
        print(f"run {run}/{args.runs}: {status} ({time.perf_counter() - t0:.0f} s)", flush=True)
        for problem in problems:
            print(problem, flush=True)
    print(f"{failed} of {args.runs} simultaneous starts failed ({args.workers} workers each)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
