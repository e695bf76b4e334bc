"""The command line as a user meets it: ``--version``, ``populate``'s closing summary (per
table and per stage: keys computed, seconds, rows added) and ``--quiet`` (no bars), run as
subprocesses against the real database on a tiny virtual V1."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version

import pytest
from conftest import import_virtual_v1

pytestmark = pytest.mark.slow

TINY_CONFIG = """
[model]
max_epochs = 1
"""


@pytest.fixture(scope="module")
def tiny(db, tmp_path_factory):
    """Two tiny simulated scans imported into the test schemas; removed afterwards."""
    scans = import_virtual_v1(
        db,
        tmp_path_factory.mktemp("virtual_v1"),
        n_scans=2,
        n_neurons=8,
        n_train=160,
        n_validation=40,
        n_test_images=6,
        n_repeats=3,
        seed=2,
    )
    yield scans
    db["recording"].Scan.delete(prompt=False, part_integrity="cascade")


def _v1twin(*args: str) -> subprocess.CompletedProcess:
    """The installed command line in a fresh process (the test schemas' prefix inherited)."""
    return subprocess.run(
        [sys.executable, "-m", "v1twin.cli", *args],
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _summary(stdout: str) -> dict[str, list[str]]:
    """Summary rows by their first column (table name, 'stage model', 'all stages')."""
    rows = {}
    for line in stdout.splitlines():
        for name in ("stage model", "all stages"):
            if line.startswith(name):
                rows[name] = line[len(name) :].split()
        if line and not line.startswith(("stage ", "all ")):
            rows.setdefault(line.split()[0], line.split()[1:])
    return rows


def test_version_is_the_package_version():
    done = _v1twin("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"v1twin {version('v1twin')}"


def test_populate_ends_with_a_summary_and_quiet_turns_the_bars_off(db, tiny, tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_CONFIG)
    n_neurons = sum(len(s.unit_ids) for s in tiny)

    quiet = _v1twin("populate", "model", "--config", str(config), "--quiet")
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    rows = _summary(quiet.stdout)
    # computed, errors, seconds, rows added (master + part rows)
    assert rows["TrainedModel"][0] == "1" and rows["TrainedModel"][3] == str(1 + n_neurons)
    assert rows["GLM"][0] == str(len(tiny)) and rows["GLM"][3] == str(len(tiny) + n_neurons)
    stage_seconds, stage_rows = rows["stage model"]
    assert int(stage_rows) == 1 + len(tiny) + 2 * n_neurons
    assert float(stage_seconds) >= float(rows["TrainedModel"][2])
    assert rows["all stages"] == rows["stage model"]
    assert "it/s" not in quiet.stderr and "step" not in quiet.stderr and "%|" not in quiet.stderr

    db["model"].TrainedModel.delete(prompt=False, part_integrity="cascade")
    loud = _v1twin("populate", "model", "--config", str(config))
    assert loud.returncode == 0, loud.stdout + loud.stderr
    rows = _summary(loud.stdout)
    assert rows["TrainedModel"][0] == "1" and rows["GLM"][0] == "0" and rows["GLM"][3] == "0"
    # the twin's own bar inside make(): optimizer steps with a rate
    assert "fit:" in loud.stderr and ("step/s" in loud.stderr or "s/step" in loud.stderr)
