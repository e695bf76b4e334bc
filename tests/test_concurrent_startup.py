"""Workers started in the same instant on one database: their start-up (declaring schemas,
tables and job queues, inserting parameter sets) must not fail on each other.

Each start runs in processes of their own, bound to a fresh schema prefix, so the session's own
schemas (bound in this process) are never re-bound. :func:`start_together` is also what
``benchmarks/simultaneous_start.py`` repeats 50 times.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import run_together

N_WORKERS = 3
STAGES = ("recording", "model", "clustering", "insilico", "analysis")


@dataclass
class Start:
    """One simultaneous start: each worker's exit code and stderr, and what the database holds."""

    returncodes: list[int]
    stderrs: list[str]
    counts: dict

    @property
    def failures(self) -> list[str]:
        return [
            f"worker {i} exited {rc}:\n{err}"
            for i, (rc, err) in enumerate(zip(self.returncodes, self.stderrs))
            if rc != 0
        ]


# Only the recording schema: the workers declare every other table themselves.
_IMPORT = """
import sys
import schemas
from v1twin.sensorium import read_sensorium
recording = schemas.activate(sys.argv[1], stages=("recording",))["recording"]
recording.insert_recording(read_sensorium(sys.argv[2]))
"""


def _query(sql: str) -> list | None:
    """Run SQL on this process's DataJoint connection (made by the caller); rows, if any."""
    import datajoint as dj

    cursor = dj.conn().query(sql)
    return cursor.fetchall() if cursor.description else None


def _counts(prefix: str) -> dict:
    """Rows the start-up inserts, and whether each job queue of the clustering stage exists."""
    one = {
        "datasets": f'"{prefix}_model"."dataset"',
        "members": f'"{prefix}_model"."dataset__member"',
        "configs": f'"{prefix}_model"."#model_config"',
        "alignment": f'"{prefix}_clustering"."#alignment_params"',
        "clustering": f'"{prefix}_clustering"."#clustering_params"',
    }
    counts = {name: _query(f"SELECT count(*) FROM {table}")[0][0] for name, table in one.items()}
    queues = _query(
        "SELECT count(*) FROM information_schema.tables "
        f"WHERE table_schema = '{prefix}_clustering' AND table_name LIKE '~~%%'"
    )
    counts["queues"] = queues[0][0]
    return counts


def drop_prefix(prefix: str) -> None:
    for stage in reversed(STAGES):
        _query(f'DROP SCHEMA IF EXISTS "{prefix}_{stage}" CASCADE')


def start_together(folder: Path, config: Path, n_workers: int = N_WORKERS) -> Start:
    """Import one scan into a fresh prefix, start ``n_workers`` ``v1twin worker clustering``
    processes in the same instant, and return what happened; the prefix is dropped after."""
    prefix = f"race{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run(
            [sys.executable, "-c", _IMPORT, prefix, str(folder)], check=True, capture_output=True
        )
        argv = ["worker", "clustering", "--config", config]
        done = run_together([argv] * n_workers, env={"V1TWIN_SCHEMA_PREFIX": prefix})
        return Start([d.returncode for d in done], [d.stderr for d in done], _counts(prefix))
    finally:
        drop_prefix(prefix)


TINY = "[alignment]\nn_betas = 2\n[clustering]\nn_clusters = 3\n"


@pytest.mark.usefixtures("db")
def test_workers_started_together_on_a_fresh_database_all_start(scan_folder, tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    start = start_together(scan_folder[0], config)
    assert not start.failures, "\n".join(start.failures)
    expected = {"datasets": 1, "members": 1, "configs": 1, "alignment": 1, "clustering": 1}
    assert {k: start.counts[k] for k in expected} == expected
    assert start.counts["queues"] == 4  # Readout, Alignment, Clustering, Embedding
