"""The pipeline's stages, in dependency order, and how to populate them.

``v1twin populate [STAGE...]`` (one process) and ``v1twin worker [STAGE...]`` (any number of
processes on any number of machines sharing one database, with DataJoint's job reservation)
both come here. Parameter sets from the config are inserted first, so that each stage's
``key_source`` holds the work to do; populate restricts itself to the config's keys.
"""

from __future__ import annotations

import importlib

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
        "insilico.ClusterOptimalGabor",
        "insilico.ClusterMEI",
    ),
    "analysis": ("analysis.PopulationAnalysis",),
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
    restriction = dict(model.ModelConfig.add(m.pop("preset"), **m))
    restriction.update(model.Dataset.add())
    restriction.update(clustering.AlignmentParams.add(**config["alignment"]))
    restriction.update(clustering.ClusteringParams.add(**config["clustering"]))
    restriction.update(insilico.InSilicoParams.add(**config["insilico"]))
    return restriction


def populate(
    config: dict, stages=None, reserve_jobs: bool = False, restrict: bool = True
) -> dict[str, dict]:
    """Populate every table of the stages in order; returns DataJoint's result per table.

    With ``reserve_jobs`` each key is reserved in the table's job queue before its ``make``,
    so concurrent workers never compute the same key twice. Errors are recorded in the job
    table (see ``v1twin jobs``) rather than stopping the other keys.
    """
    restriction = add_parameters(config)
    results = {}
    for table in tables(stages):
        keys = [_restriction_for(table, restriction)] if restrict else []
        results[table.__class__.__name__] = table.populate(
            *keys,
            reserve_jobs=reserve_jobs,
            display_progress=True,
            suppress_errors=reserve_jobs,
        )
    return results


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


def _restriction_for(table, restriction: dict) -> dict:
    """The part of the restriction that names attributes of the table's key source."""
    names = set(table.key_source.primary_key)
    return {k: v for k, v in restriction.items() if k in names}


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
