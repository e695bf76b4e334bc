"""Workers started in the same instant on one database: their start-up (declaring schemas,
tables and job queues, inserting parameter sets) must not fail on each other.

Each step runs in a process of its own, bound to a fresh schema prefix, so the session's own
schemas (bound in this process) are never re-bound.
"""

from __future__ import annotations

import multiprocessing as mp
import uuid

import pytest

N_WORKERS = 4


def _import_scan(prefix, folder, queue):
    import schemas
    from v1twin.sensorium import read_sensorium

    modules = schemas.activate(prefix, stages=("recording",))
    modules["recording"].insert_recording(read_sensorium(folder))
    queue.put("imported")


def _start_worker(barrier, prefix, queue):
    """What `v1twin worker` does before populating, released with the others by a barrier."""
    try:
        from schemas import connection
        from v1twin import config, pipeline

        connection.connect()
        barrier.wait(timeout=60)
        queue.put(("ok", pipeline.start_worker(["model"], config.defaults("cpu"), prefix=prefix)))
    except Exception as error:  # reported to the test, which names it
        queue.put(("error", f"{type(error).__name__}: {error}"))


def _count_and_drop(prefix, queue):
    import schemas

    modules = schemas.activate(prefix)
    model = modules["model"]
    queue.put(
        {
            "datasets": len(model.Dataset()),
            "members": len(model.Dataset.Member()),
            "configs": len(model.ModelConfig()),
            "queues": [t.jobs.is_declared for t in (model.TrainedModel(), model.GLM())],
        }
    )
    schemas.drop_all(prefix)


def _in_processes(ctx, target, args_list, timeout=180):
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, queue)) for args in args_list]
    for p in procs:
        p.start()
    results = [queue.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return results


@pytest.mark.usefixtures("db")
def test_workers_started_together_on_a_fresh_database_all_start(scan_folder):
    ctx = mp.get_context("spawn")
    prefix = f"race{uuid.uuid4().hex[:8]}"
    _in_processes(ctx, _import_scan, [(prefix, str(scan_folder[0]))])
    barrier = ctx.Barrier(N_WORKERS)
    try:
        results = _in_processes(ctx, _start_worker, [(barrier, prefix)] * N_WORKERS)
    finally:
        (state,) = _in_processes(ctx, _count_and_drop, [(prefix,)])
    errors = [r[1] for r in results if r[0] == "error"]
    assert not errors, errors
    keys = [r[1] for r in results]
    assert all(k == keys[0] for k in keys)  # the same parameter sets, found or inserted
    assert state == {"datasets": 1, "members": 1, "configs": 1, "queues": [True, True]}
