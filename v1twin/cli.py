"""The ``v1twin`` command: database, simulation, import, and the pipeline's stages.

    v1twin db start|stop|status
    v1twin simulate --out DIR [--seed S] [--neurons N] [--scans K] [--trials T]
    v1twin import sensorium PATH...      (folders or zips)
    v1twin import netcdf PATH...
    v1twin demo [--out DIR]

This is the only module that imports :mod:`schemas`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _ensure_database():
    """Use the lab's server (DJ_HOST...) if configured, else start the local one."""
    from schemas import connection

    if connection.external_credentials() is None:
        from .server import LocalServer

        LocalServer.default().start()


def cmd_db(args) -> int:
    from schemas import connection

    from .server import LocalServer, ping

    external = connection.external_credentials()
    if external is not None:
        if args.action != "status":
            print(f"DJ_HOST is set: using {external.describe()}; v1twin starts no server of its own")
        error = ping(external)
        print(f"{external.describe()}: {'answers' if error is None else 'does not answer: ' + error}")
        return 0 if error is None else 1
    server = LocalServer.default()
    if args.action == "start":
        creds = server.start()
        print(f"local PostgreSQL at {creds.describe()} (data {server.data_dir}); answers")
    elif args.action == "stop":
        print("stopped" if server.stop() else "not running")
    else:
        creds = connection.local_credentials()
        if creds is None or not server.running():
            print(f"local server: not running (data directory {server.data_dir})")
            return 1
        error = ping(creds)
        print(f"local PostgreSQL at {creds.describe()} (data {server.data_dir}): "
              f"{'answers' if error is None else 'does not answer: ' + error}")
        return 0 if error is None else 1
    return 0


def cmd_simulate(args) -> int:
    from .simulator import simulate_scans, write_simulation

    t0 = time.perf_counter()
    scans = simulate_scans(
        n_scans=args.scans, n_neurons=args.neurons, n_train=args.trials, seed=args.seed,
    )
    folders = write_simulation(args.out, scans)
    print(f"wrote {len(folders)} scans to {args.out} in {time.perf_counter() - t0:.1f} s:")
    for folder in folders:
        print(f"  {folder}")
    return 0


def cmd_import(args) -> int:
    from .recording import read_netcdf
    from .sensorium import read_sensorium

    reader = read_sensorium if args.format == "sensorium" else read_netcdf
    # Read and validate everything first: a bad file stops the import before any write.
    recordings = [reader(path) for path in args.paths]
    _ensure_database()
    import schemas

    recording = schemas.activate()["recording"]
    for rec in recordings:
        t0 = time.perf_counter()
        added = recording.insert_recording(rec)
        n_trials, n_neurons = rec.responses.shape
        status = f"imported in {time.perf_counter() - t0:.1f} s" if added else "already imported: nothing changed"
        print(f"scan {rec.scan_key}: {n_neurons} neurons x {n_trials} trials, {status}")
    return 0


def cmd_demo(args) -> int:
    out = Path(args.out)
    data_dir = out / "data"
    if not any(data_dir.glob("static*")):
        cmd_simulate(argparse.Namespace(out=data_dir, scans=2, neurons=300, trials=4000, seed=0))
    cmd_import(argparse.Namespace(format="sensorium", paths=sorted(data_dir.glob("static*"))))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="v1twin", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="run the local PostgreSQL server")
    db.add_argument("action", choices=["start", "stop", "status"])
    db.set_defaults(func=cmd_db)

    sim = sub.add_parser("simulate", help="write a virtual-V1 dataset in the Sensorium format")
    sim.add_argument("--out", required=True, type=Path)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--neurons", type=int, default=300, help="neurons per scan")
    sim.add_argument("--scans", type=int, default=2)
    sim.add_argument("--trials", type=int, default=4000, help="train-tier trials per scan")
    sim.set_defaults(func=cmd_simulate)

    imp = sub.add_parser("import", help="import recordings into the database")
    imp.add_argument("format", choices=["sensorium", "netcdf"])
    imp.add_argument("paths", nargs="+", type=Path)
    imp.set_defaults(func=cmd_import)

    demo = sub.add_parser("demo", help="the whole pipeline on a simulated virtual V1")
    demo.add_argument("--out", type=Path, default=Path("demo_out"))
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .recording import RecordingError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (RecordingError, FileNotFoundError, KeyError, PermissionError) as err:
        print(f"v1twin {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
