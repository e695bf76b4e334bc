"""The pipeline's stages, in dependency order, and how to populate them.

``v1twin populate [STAGE...]`` (one process) and ``v1twin worker [STAGE...]`` (any number of
processes on any number of machines sharing one database, with DataJoint's job reservation)
both come here. Parameter sets from the config are inserted first, so that each stage's
``key_source`` holds the work to do; populate restricts itself to the config's keys.
"""

from __future__ import annotations

import importlib
import time

STAGES: dict[str, tuple[str, ...]] = {
    "model": ("model.TrainedModel", "model.GLM"),
    "clustering": (
        "clustering.Readout",
        "clustering.Alignment",
        "clustering.Clustering",
        "clustering.Embedding",
    ),
    "insilico": (
        "insilico.OptimalGabor",
        "insilico.OptimalDoG",
        "insilico.MEI",
        "insilico.OrientationTuning",
        "insilico.PhaseTuning",
        "insilico.SizeContrastTuning",
        "insilico.PlaidTuning",
        "insilico.StimulusComparison",
        "insilico.NonlinearityIndex",
        "insilico.GaborSet",
        "insilico.ClusterOptimalGabor",
        "insilico.ClusterOrientationTuning",
        "insilico.ClusterPhaseTuning",
        "insilico.ClusterSizeContrastTuning",
        "insilico.ClusterPlaidTuning",
        "insilico.ClusterMEI",
    ),
    "analysis": ("analysis.PopulationAnalysis", "analysis.IndexReliability"),
}


def tables(stages=None) -> list:
    """The computed tables of the named stages (default: all), in dependency order."""
    stages = list(stages or STAGES)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise KeyError(f"unknown stages {unknown}; choose from {list(STAGES)}")
    out = []
    for stage in STAGES:  # dependency order, whatever order they were named in
        if stage in stages:
            for name in STAGES[stage]:
                module, table = name.split(".")
                out.append(getattr(importlib.import_module(f"schemas.{module}"), table)())
    return out


def add_parameters(config: dict) -> dict:
    """Insert the config's parameter sets (idempotent); returns the restriction selecting them."""
    from schemas import clustering, insilico, model

    m = dict(config["model"])
    preset, first, n_seeds = m.pop("preset"), m.pop("seed"), m.pop("n_seeds")
    if n_seeds < 1:
        raise ValueError(f"[model] n_seeds must be >= 1, got {n_seeds}")
    seeds = [first + i for i in range(n_seeds)]
    hashes = [model.ModelConfig.add(preset, seed=s, **m)["model_hash"] for s in seeds]
    # several seeds: a list, which restricts to any of them (schemas.any_of)
    restriction = {"model_hash": hashes if n_seeds > 1 else hashes[0]}
    restriction.update(model.SeedSet.add(hashes, seeds))
    restriction.update(model.Dataset.add())
    restriction.update(clustering.AlignmentParams.add(**config["alignment"]))
    restriction.update(clustering.ClusteringParams.add(**config["clustering"]))
    restriction.update(insilico.InSilicoParams.add(**config["insilico"]))
    return restriction


def imported_models(restriction: dict) -> list[dict]:
    """The config's restriction for each imported model (``v1twin import model``) in place of
    the config's twin: populate runs every stage after ``model`` on them too. Makes their
    modules loadable first (neuralpredictors' import shims, when it is installed)."""
    from schemas import model

    keys = (model.TrainedModel & model.ExternalModel.proj()).keys(order_by="KEY")
    if keys:
        from .interop.neuralpredictors import NotInstalled, load

        try:
            load()
        except NotInstalled:
            pass
    return [{**restriction, **k} for k in keys]


RECONNECT_S = 300.0  # how long a worker waits for a lost database server to answer again
_LOST = ("LostConnectionError", "OperationalError", "InterfaceError")  # the server went away


class DatabaseLost(RuntimeError):
    """The database server went away during populate and did not answer again in time."""


def populate(
    config: dict,
    stages=None,
    reserve_jobs: bool = False,
    restrict: bool = True,
    progress: bool = True,
    reconnect_s: float = RECONNECT_S,
) -> dict[str, dict]:
    """Populate every table of the stages in order; returns DataJoint's result per table, with
    "stage", "seconds" (wall time of its populate) and "rows_added" (rows of the table and its
    parts after minus before; with concurrent workers, theirs count too) added.

    With ``reserve_jobs`` each key is reserved in the table's job queue before its ``make``,
    so concurrent workers never compute the same key twice. Errors are recorded in the job
    table (see ``v1twin jobs``) rather than stopping the other keys. ``progress``: DataJoint's
    bar over keys and each ``make``'s bars inside itself (``schemas.show_progress``). A worker
    that loses the database server waits up to ``reconnect_s`` seconds for it (see
    ``_populate_reconnecting``).
    """
    import schemas

    schemas.show_progress(progress)
    restriction = add_parameters(config)
    restrictions = [restriction, *imported_models(restriction)]
    if "clustering" in (stages or STAGES):
        from schemas import clustering

        for line in clustering.skipped():
            print(line, flush=True)
    stage_of = {name.split(".")[1]: stage for stage, names in STAGES.items() for name in names}
    results = {}
    for table in tables(stages):
        keys = [sum((_restriction_for(table, r) for r in restrictions), [])] if restrict else []
        rows, start = _rows(table), time.perf_counter()
        if reserve_jobs:
            result = _populate_reconnecting(table, keys, reconnect_s, progress)
        else:
            result = table.populate(*keys, display_progress=progress)
        name = table.__class__.__name__
        results[name] = dict(
            result,
            stage=stage_of[name],
            seconds=time.perf_counter() - start,
            rows_added=_rows(table) - rows,
        )
    return results


def _rows(table) -> int:
    """Rows of a table and of its part tables."""
    return len(table) + sum(len(part) for part in table.parts(as_objects=True))


def summary(results: dict[str, dict]) -> str:
    """One screen: per table (grouped by stage) keys computed, errors, seconds and rows added;
    per stage and in all, the seconds and rows added."""
    lines = [f"{'table':24} {'computed':>8} {'errors':>6} {'seconds':>9} {'rows added':>11}"]
    totals: dict[str, list[float]] = {}
    for name, r in results.items():
        errors = len(r.get("error_list", []))
        lines.append(
            f"{name:24} {r.get('success_count', 0):8d} {errors:6d} "
            f"{r['seconds']:9.1f} {r['rows_added']:11d}"
        )
        total = totals.setdefault(r["stage"], [0.0, 0])
        total[0] += r["seconds"]
        total[1] += r["rows_added"]
    lines.append("-" * len(lines[0]))
    for stage, (seconds, rows) in totals.items():
        lines.append(f"{'stage ' + stage:24} {'':8} {'':6} {seconds:9.1f} {rows:11d}")
    seconds = sum(s for s, _ in totals.values())
    rows = sum(r for _, r in totals.values())
    lines.append(f"{'all stages':24} {'':8} {'':6} {seconds:9.1f} {rows:11d}")
    return "\n".join(lines)


def _populate_reconnecting(
    table, keys: list, reconnect_s: float, progress: bool = True, max_losses: int = 3
) -> dict:
    """``table.populate`` with job reservation that survives a database server restart.

    Each ``make`` runs in one transaction, so a key in progress when the server goes away is
    rolled back whole (no partial rows). The worker then waits up to ``reconnect_s`` seconds for
    the server, reconnects, returns the keys it had reserved (and those that failed only for
    the lost connection) to the queue, and populates again; else it raises
    :class:`DatabaseLost`, and the next worker on this host releases its reservations.
    """
    done, errors = 0, []
    for _ in range(max_losses):
        try:
            result = table.populate(
                *keys, reserve_jobs=True, display_progress=progress, suppress_errors=True
            )
        except Exception as err:
            if not _is_lost(f"{type(err).__name__}: {err}", err):
                raise
            reason = f"{type(err).__name__}: {err}".strip()
        else:
            lost = [msg for _, msg in result["error_list"] if _is_lost(str(msg))]
            done += result["success_count"]
            errors += [e for e in result["error_list"] if not _is_lost(str(e[1]))]
            if not lost:
                return {"success_count": done, "error_list": errors}
            reason = str(lost[0])
        _wait_for_server(table.connection, reason.splitlines()[0], reconnect_s)
        _requeue_own(table)
    raise DatabaseLost(f"lost the database server {max_losses} times; last: {reason}")


def _is_lost(message: str, err: BaseException | None = None) -> bool:
    """Whether an error (or its message in the job table) means the server went away."""
    while err is not None:
        if type(err).__name__ in _LOST:
            return True
        err = err.__cause__ or err.__context__
    return message.startswith(_LOST)


def _wait_for_server(conn, reason: str, timeout_s: float) -> None:
    """Wait (bounded) until the server answers again, then reconnect ``conn``."""
    import sys
    import time

    from schemas import connection

    from .server import ping

    creds = connection.credentials()
    print(
        f"lost the database server {creds.describe()} ({reason}); the key in progress was "
        f"rolled back. Waiting up to {timeout_s:.0f} s for the server to answer again",
        file=sys.stderr,
        flush=True,
    )
    deadline = time.monotonic() + timeout_s
    while ping(creds) is not None:
        if time.monotonic() > deadline:
            raise DatabaseLost(
                f"the database server {creds.describe()} did not answer within {timeout_s:.0f} s "
                f"({reason}). Nothing partial was written (each key is one transaction); run "
                "`v1twin worker` again once the server is back: the keys this worker had "
                "reserved are released then"
            )
        time.sleep(1.0)
    conn.connect()
    conn.cancel_transaction()  # the transaction the server dropped: clear its flag
    print("the database server answers again: reconnected", file=sys.stderr, flush=True)


def _requeue_own(table) -> None:
    """Return to the queue the keys this process reserved, or that failed for the lost
    connection, so that the next ``populate`` (its refresh) schedules them again."""
    import os
    import socket

    jobs = table.jobs
    mine = jobs & {"host": socket.gethostname(), "pid": os.getpid()}
    (mine & "status = 'reserved'").delete_quick()
    for job in (mine & "status = 'error'").to_dicts():
        if _is_lost(job["error_message"]):
            (jobs & {k: job[k] for k in jobs.primary_key}).delete_quick()


def start_worker(
    stages, config: dict, prefix: str | None = None, orphan_timeout: float | None = None
) -> dict:
    """What a worker does before it populates; returns the config's restriction.

    Binds the schemas (declaring any missing table), declares the stages' job queues, releases
    keys reserved by dead workers (see ``release_dead_reservations``) and inserts the config's
    parameter sets. Workers take turns through each step under a server-wide lock: declarations
    are not safe to run concurrently.
    """
    import schemas
    from schemas import connection

    schemas.activate(prefix)  # takes the lock itself, on the connection it makes
    with connection.exclusive():
        work = tables(stages)
        declare_job_queues(work)
        for table in work:
            released = release_dead_reservations(table, orphan_timeout)
            if released:
                print(
                    f"{table.__class__.__name__}: released {released} keys reserved by dead workers"
                )
        return add_parameters(config)


def _restriction_for(table, restriction: dict) -> list[dict]:
    """The part of the restriction that names attributes of the table's key source, as
    DataJoint's OR-list (a list value, e.g. several seeds' model_hash, matches any of them)."""
    from schemas import any_of

    names = set(table.key_source.primary_key)
    return any_of({k: v for k, v in restriction.items() if k in names})


def declare_job_queues(tables) -> None:
    """Declare each table's missing job queue (DataJoint would do it on first use, unguarded
    against a concurrent declaration; ``start_worker`` calls this under its lock)."""
    for table in tables:
        if not table.jobs.is_declared:
            table.jobs.declare()


def release_dead_reservations(table, orphan_timeout: float | None = None) -> int:
    """Return to the queue the keys reserved by workers that died mid-``make``.

    On this host a reservation whose process no longer exists is released at once; one from
    another host only after ``orphan_timeout`` seconds (DataJoint's orphan cleanup). The
    killed ``make`` left no rows: DataJoint runs each ``make`` in a transaction.
    """
    import socket

    jobs = table.jobs
    reserved = (jobs.reserved & {"host": socket.gethostname()}).to_dicts()
    dead = [job for job in reserved if not _alive(job["pid"])]
    primary = jobs.primary_key
    for job in dead:
        (jobs & {k: job[k] for k in primary}).delete_quick()
    if orphan_timeout is not None:
        jobs.refresh(orphan_timeout=orphan_timeout)
    return len(dead)


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
