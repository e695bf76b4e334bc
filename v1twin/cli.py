"""The ``v1twin`` command: database, simulation, import, and the pipeline's stages.

    v1twin db start|stop|status
    v1twin simulate --out DIR [--seed S] [--neurons N] [--scans K] [--trials T] [--population P]
                    [--behavior]
    v1twin import sensorium PATH...      (folders or zips)
    v1twin import netcdf PATH...
    v1twin import model PATH --scan SCAN [--scan SCAN...] [--data-key KEY...] [--canvas H W]
                         [--builder package.module:function [--builder-kwargs JSON]]
    v1twin populate [STAGE...] [--preset cpu|paper] [--config FILE]
    v1twin worker [STAGE...] [--preset cpu|paper] [--config FILE]   (reserve_jobs: many at once)
    v1twin jobs [--retry]
    v1twin export --out DIR [--where ATTR=VALUE ...]
    v1twin report --out DIR [--where ATTR=VALUE ...]
    v1twin demo [--out DIR]
    v1twin --version

``populate``, ``worker``, ``import`` and ``demo`` show progress bars (``--quiet``: none).
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
            print(
                f"DJ_HOST is set: using {external.describe()}; v1twin starts no server of its own"
            )
        error = ping(external)
        print(
            f"{external.describe()}: {'answers' if error is None else 'does not answer: ' + error}"
        )
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
        print(
            f"local PostgreSQL at {creds.describe()} (data {server.data_dir}): "
            f"{'answers' if error is None else 'does not answer: ' + error}"
        )
        return 0 if error is None else 1
    return 0


def cmd_simulate(args) -> int:
    from simulator import simulate_scans, write_simulation

    t0 = time.perf_counter()
    scans = simulate_scans(
        n_scans=args.scans,
        n_neurons=args.neurons,
        n_train=args.trials,
        seed=args.seed,
        population=args.population,
        behavior=args.behavior,
    )
    folders = write_simulation(args.out, scans)
    print(f"wrote {len(folders)} scans to {args.out} in {time.perf_counter() - t0:.1f} s:")
    for folder in folders:
        print(f"  {folder}")
    return 0


def cmd_import(args) -> int:
    if args.format == "model":
        return cmd_import_model(args)
    if args.scan or args.builder or args.data_key or args.canvas:
        raise KeyError("--scan, --data-key, --canvas and --builder belong to `v1twin import model`")
    from .recording import read_netcdf
    from .sensorium import read_sensorium

    def reader(path):
        if args.format == "sensorium":
            return read_sensorium(path, progress=not args.quiet)
        return read_netcdf(path)

    # Read and validate everything first: a bad file stops the import before any write. Each
    # scan is dropped once checked and read again to insert, so that at most one scan's images
    # are in memory (0.9 GB for one of Sensorium's 6,000 trials at 144 x 256).
    for path in args.paths:
        reader(path)
    _ensure_database()
    import schemas

    schemas.show_progress(not args.quiet)

    recording = schemas.activate()["recording"]
    for path in args.paths:
        rec = reader(path)
        t0 = time.perf_counter()
        added = recording.insert_recording(rec)
        n_trials, n_neurons = rec.responses.shape
        status = (
            f"imported in {time.perf_counter() - t0:.1f} s"
            if added
            else "already imported: nothing changed"
        )
        print(f"scan {rec.scan_key}: {n_neurons} neurons x {n_trials} trials, {status}")
        del rec  # before the next scan is read
    return 0


def cmd_import_model(args) -> int:
    """Register a model trained elsewhere (insilico.external: a state_dict + its builder, or a
    whole pickled nn.Module) as a TrainedModel of the scans; checked before anything is written."""
    import json

    from .interop.neuralpredictors import NotInstalled, load

    if len(args.paths) != 1:
        raise KeyError(f"v1twin import model takes one model file, got {len(args.paths)}")
    if not args.scan:
        raise KeyError("v1twin import model needs --scan SCAN_KEY (one per scan of the model)")
    data_keys = args.data_key or args.scan
    if len(data_keys) != len(args.scan) or len(set(args.scan)) != len(args.scan):
        raise KeyError(
            f"--data-key: one per --scan, in the same order (got scans {args.scan}, data keys "
            f"{args.data_key})"
        )
    try:
        load()  # neuralpredictors 0.3's import shims, for its models' classes
    except NotInstalled:
        pass
    from insilico.external import equivariant_features, read_module

    path = args.paths[0]
    kwargs = json.loads(args.builder_kwargs) if args.builder_kwargs else {}
    fmt = "state_dict" if args.builder else "module"
    try:
        module, spec, weights = read_module(path, fmt, args.builder, kwargs)
    except ValueError as err:
        print(f"v1twin import model: error: {err}", file=sys.stderr)
        return 2
    _ensure_database()
    import schemas

    modules = schemas.activate()
    recording, model = modules["recording"], modules["model"]
    canvas = args.canvas
    if canvas is None:
        shape = (recording.Scan & {"scan_key": args.scan[0]}).to_arrays(
            "image_height", "image_width"
        )
        canvas = [int(s[0]) for s in shape] if len(shape[0]) else [0, 0]
    notes = []
    for key in data_keys:
        try:
            equivariant_features(module, key)
        except (KeyError, ValueError) as err:
            notes.append(f"no bar codes ({err})")
    try:
        key = model.ExternalModel.add(
            path, module, spec, weights, dict(zip(args.scan, data_keys)), canvas, "; ".join(notes)
        )
    except ValueError as err:
        print(f"v1twin import model: error: {err}", file=sys.stderr)
        return 2
    row = (model.TrainedModel & key).fetch1()
    print(
        f"imported {path} ({fmt}) as model_hash={key['model_hash']} on scans {args.scan}, "
        f"canvas {canvas}: median test correlation {row['test_corr']:.3f}, FEVE {row['feve']:.3f}"
    )
    print(
        "clustering: " + ("; ".join(notes) + ": skipped for this model" if notes else "bar codes")
    )
    print(
        "next: v1twin populate insilico; v1twin export --out DIR --where "
        f"model_hash={key['model_hash']}"
    )
    return 0


def _pipeline_config(args) -> dict:
    from . import config

    return config.load(args.config, preset=args.preset)


def cmd_populate(args) -> int:
    from . import pipeline

    cfg = _pipeline_config(args)  # a bad config stops here, before the database is touched
    _ensure_database()
    import schemas

    schemas.activate()
    results = pipeline.populate(
        cfg,
        args.stages or None,
        reserve_jobs=args.reserve_jobs,
        progress=not args.quiet,
        reconnect_s=args.reconnect_s,
    )
    print(pipeline.summary(results))
    return 1 if any(r.get("error_list") for r in results.values()) else 0


def cmd_worker(args) -> int:
    from . import pipeline

    cfg = _pipeline_config(args)  # a bad config stops here, before the database is touched
    _ensure_database()
    pipeline.start_worker(args.stages or None, cfg, orphan_timeout=args.orphan_timeout)
    args.reserve_jobs = True
    return cmd_populate(args)


def cmd_jobs(args) -> int:
    from . import pipeline

    _ensure_database()
    import schemas

    schemas.activate()
    for table in pipeline.tables():
        errors = table.jobs.errors
        progress = table.jobs.progress()
        print(f"{table.__class__.__name__:24} " + " ".join(f"{k}={v}" for k, v in progress.items()))
        for job in errors.to_dicts():
            key = {k: job[k] for k in table.jobs.primary_key}
            print(f"    error {key}: {job['error_message']}")
        if args.retry and len(errors):
            n = len(errors)
            errors.delete_quick()
            table.jobs.refresh()
            print(f"    {n} error jobs returned to the queue")
    return 0


def cmd_demo(args) -> int:
    from . import demo

    _ensure_database()
    result = demo.run(args.out, seed=args.seed, progress=not args.quiet)
    print(demo.summary(result))
    print(f"report: {args.out / 'report' / 'index.html'}   export: {args.out / 'export'}")
    return 0


def _version() -> str:
    """The installed package's version (package metadata)."""
    from importlib.metadata import version

    return version("v1twin")


def build_parser() -> argparse.ArgumentParser:
    from simulator.population import POPULATIONS

    from . import pipeline

    parser = argparse.ArgumentParser(prog="v1twin", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    db = sub.add_parser("db", help="run the local PostgreSQL server")
    db.add_argument("action", choices=["start", "stop", "status"])
    db.set_defaults(func=cmd_db)

    sim = sub.add_parser("simulate", help="write a virtual-V1 dataset in the Sensorium format")
    sim.add_argument("--out", required=True, type=Path)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--neurons", type=int, default=300, help="neurons per scan")
    sim.add_argument("--scans", type=int, default=2)
    sim.add_argument("--trials", type=int, default=4000, help="train-tier trials per scan")
    sim.add_argument(
        "--population",
        default="default",
        help="cell types and tuning ranges: a name ("
        + ", ".join(POPULATIONS)
        + ") or a TOML file (see simulator.population)",
    )
    sim.add_argument(
        "--behavior",
        action="store_true",
        help="record behaviour and pupil centre per trial, with known effects (running speed "
        "scales the stimulus drive, the pupil centre moves the RFs; simulator.virtual_v1)",
    )
    sim.set_defaults(func=cmd_simulate)

    imp = sub.add_parser("import", help="import recordings into the database", parents=[quiet])
    imp.add_argument("format", choices=["sensorium", "netcdf", "model"])
    imp.add_argument("paths", nargs="+", type=Path)
    imp.add_argument(
        "--scan", action="append", default=[], help="model: a scan_key it predicts (repeatable)"
    )
    imp.add_argument(
        "--data-key",
        action="append",
        default=[],
        help="model: its data_key for each --scan, same order (default: the scan_key)",
    )
    imp.add_argument(
        "--canvas",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="model: the image size it takes (default: the scan's stored images)",
    )
    imp.add_argument(
        "--builder",
        metavar="PACKAGE.MODULE:FUNCTION",
        help="model: PATH is a state_dict; FUNCTION(**builder_kwargs) builds the model "
        "(default: PATH is a whole pickled nn.Module, torch.save(model, PATH))",
    )
    imp.add_argument("--builder-kwargs", metavar="JSON", help="model: the builder's arguments")
    imp.set_defaults(func=cmd_import)

    for name, helptext in (
        ("populate", "fill the pipeline's tables, stage by stage"),
        ("worker", "populate with job reservation: run any number at once"),
    ):
        p = sub.add_parser(
            name,
            help=helptext,
            epilog=_config_help(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[quiet],
        )
        p.add_argument(
            "stages", nargs="*", help="stages to fill (default: all, in dependency order)"
        )
        p.add_argument("--preset", choices=["cpu", "paper"], default="cpu")
        p.add_argument("--config", type=Path, help="TOML file overriding the preset's parameters")
        p.set_defaults(
            func=cmd_populate if name == "populate" else cmd_worker,
            reserve_jobs=False,
            reconnect_s=pipeline.RECONNECT_S,
        )
        if name == "worker":
            p.add_argument(
                "--reconnect-timeout",
                dest="reconnect_s",
                type=float,
                default=pipeline.RECONNECT_S,
                help="seconds to wait for a lost database server to answer again, then exit",
            )
            p.add_argument(
                "--orphan-timeout",
                type=float,
                default=None,
                help="seconds after which keys reserved on other hosts are re-queued",
            )

    jobs = sub.add_parser("jobs", help="show the job queues and their errors")
    jobs.add_argument("--retry", action="store_true", help="return error jobs to the queue")
    jobs.set_defaults(func=cmd_jobs)

    from .export import add_subcommands

    add_subcommands(sub, _ensure_database)

    demo = sub.add_parser(
        "demo", help="the whole pipeline on a simulated virtual V1", parents=[quiet]
    )
    demo.add_argument("--out", type=Path, default=Path("demo_out"))
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)
    return parser


def _config_help() -> str:
    from .config import describe

    return "parameters (set them in a TOML file given with --config):\n" + describe()


def main(argv: list[str] | None = None) -> int:
    from simulator.population import PopulationError

    from .config import ConfigError
    from .pipeline import DatabaseLost
    from .recording import RecordingError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (
        RecordingError,
        ConfigError,
        PopulationError,
        DatabaseLost,
        FileNotFoundError,
        KeyError,
        PermissionError,
    ) as err:
        print(f"v1twin {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
