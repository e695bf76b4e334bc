"""DataJoint tables of the pipeline, one module per stage, element style.

Stages in dependency order: :mod:`recording` -> ``model`` -> ``clustering`` -> ``insilico``.
Each module declares an unbound ``schema``; :func:`activate` binds them all to schemas
named ``{prefix}_{stage}`` on the configured server (see :mod:`schemas.connection`)::

    import schemas
    schemas.activate()              # prefix from $V1TWIN_SCHEMA_PREFIX, default "v1twin"
    from schemas import recording
    recording.Scan()

Tables keep to DataJoint 2 core types (``int32``, ``float32``, ``varchar``, ``<blob>``) that
both PostgreSQL and MySQL backends support.
"""

from __future__ import annotations

import importlib
import warnings

warnings.filterwarnings("ignore", message="No datajoint.json found")
import datajoint as dj  # noqa: E402

from . import connection  # noqa: E402

STAGES = ("recording", "model", "clustering", "insilico", "analysis")

_progress = True


def show_progress(on: bool | None = None) -> bool:
    """Whether each ``make`` shows progress bars inside itself (steps, neurons, stimuli done);
    ``on`` sets it for this process (the CLI's ``--quiet`` turns them off). Returns the setting."""
    global _progress
    if on is not None:
        _progress = bool(on)
    return _progress


def any_of(restriction: dict) -> list[dict]:
    """A restriction dict whose values may be lists (e.g. the ``model_hash`` of each seed) as
    DataJoint's OR-list of plain dicts: ``table & any_of(r)`` matches any combination."""
    import itertools

    names = list(restriction)
    choices = [v if isinstance(v, (list, tuple)) else [v] for v in restriction.values()]
    return [dict(zip(names, combo)) for combo in itertools.product(*choices)]


def new_schema() -> dj.Schema:
    """An unbound schema for a stage module; bound by :func:`activate`."""
    return dj.Schema()


def activate(prefix: str | None = None, stages: tuple[str, ...] = STAGES) -> dict[str, object]:
    """Connect and bind every stage's schema to ``{prefix}_{stage}``; returns the modules.

    Binding declares missing schemas and tables, which is not safe to run concurrently, so it
    runs under the server-wide lock of :func:`connection.exclusive`: processes started together
    (workers, imports) take turns; the first declares, the others find the tables there.
    """
    connection.connect()
    prefix = prefix or connection.schema_prefix()
    modules = {}
    with connection.exclusive():
        for stage in stages:
            module = importlib.import_module(f"{__name__}.{stage}")
            module.schema.activate(f"{prefix}_{stage}")
            modules[stage] = module
    return modules


def drop_all(prefix: str) -> None:
    """Drop every stage's schema under ``prefix``, downstream first (used by tests)."""
    for stage in reversed(STAGES):
        module = importlib.import_module(f"{__name__}.{stage}")
        if module.schema.is_activated() and module.schema.database.startswith(prefix):
            module.schema.drop(prompt=False)
