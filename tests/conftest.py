"""Shared fixtures: a real PostgreSQL server and schemas private to this test session.

`make test` starts the project's local server (`v1twin db start`); where DJ_HOST is set the
tests use that server instead. Either way they run in schemas named ``test{pid}_*`` and drop
them at the end, so a developer's own tables are never touched.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

# A `v1twin` command in a process that imports everything first, says "ready", and waits for
# "go" on its stdin, so that processes released together reach the database in the same instant
# rather than staggered by their imports.
_GATED = """
import sys
import schemas, torch  # noqa: F401
from v1twin import cli, config, pipeline  # noqa: F401
print("ready", flush=True)
sys.stdin.readline()
sys.exit(cli.main(sys.argv[1:]))
"""


def run_together(
    commands, env=None, timeout=300, script=_GATED
) -> list[subprocess.CompletedProcess]:
    """Run ``v1twin`` commands (argument lists) in processes of their own, all released in the
    same instant once each has imported its modules; returns each one's exit code and output.

    ``script`` (Python source) may replace the command: it prints "ready", waits for a line on
    stdin, then does its work with the arguments in ``sys.argv[1:]``."""
    procs = []
    try:
        for argv in commands:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", script, *map(str, argv)],
                    env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        for p in procs:
            assert p.stdout.readline() == "ready\n", p.communicate(timeout=timeout)[1]
        for p in procs:  # the same instant: one write to each pipe
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [
        subprocess.CompletedProcess(p.args, p.returncode, out, err)
        for p, (out, err) in zip(procs, outputs)
    ]


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small torch problems run faster on one thread on a loaded 2-core machine (less
    synchronisation); modules opt in with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def db():
    """Activated schema modules (dict stage -> module) on a private prefix."""
    from schemas import connection

    if connection.external_credentials() is None:
        from v1twin.server import LocalServer

        LocalServer.default().start()
    import schemas

    prefix = f"test{os.getpid()}"
    saved = os.environ.get("V1TWIN_SCHEMA_PREFIX")
    os.environ["V1TWIN_SCHEMA_PREFIX"] = prefix  # the CLI, called in tests, uses it too
    modules = schemas.activate(prefix)
    yield modules
    schemas.drop_all(prefix)
    if saved is None:
        os.environ.pop("V1TWIN_SCHEMA_PREFIX")
    else:
        os.environ["V1TWIN_SCHEMA_PREFIX"] = saved


def import_virtual_v1(db, out, **simulate_kwargs):
    """Simulate a virtual V1 (``simulator.simulate_scans(**simulate_kwargs)``), write it as
    Sensorium folders under ``out`` and import them; returns the SimulatedScans."""
    from simulator import simulate_scans, write_simulation
    from v1twin.sensorium import read_sensorium

    scans = simulate_scans(**simulate_kwargs)
    for folder in write_simulation(out, scans):
        db["recording"].insert_recording(read_sensorium(folder, progress=False))
    return scans


@pytest.fixture
def recording_tables(db):
    """The recording module, emptied after the test."""
    recording = db["recording"]
    yield recording
    recording.Scan.delete(prompt=False, part_integrity="cascade")


def make_scan_arrays(
    n_neurons=12,
    n_train=40,
    n_validation=10,
    n_test_images=4,
    n_repeats=3,
    height=9,
    width=16,
    seed=0,
):
    """Small random arrays in the shape of a Sensorium scan (the format, not the science)."""
    rng = np.random.default_rng(seed)
    n_test = n_test_images * n_repeats
    tiers = np.array(["train"] * n_train + ["validation"] * n_validation + ["test"] * n_test)
    image_ids = np.concatenate(
        [
            np.arange(n_train + n_validation),
            1000 + np.repeat(np.arange(n_test_images), n_repeats),
        ]
    )
    order = rng.permutation(len(tiers))
    tiers, image_ids = tiers[order], image_ids[order]
    pictures = {
        i: rng.uniform(0, 255, (1, height, width)).astype(np.float32) for i in np.unique(image_ids)
    }
    return dict(
        images=np.stack([pictures[i] for i in image_ids]),
        responses=rng.poisson(2.0, (len(tiers), n_neurons)).astype(np.float32),
        tiers=tiers,
        image_ids=image_ids,
        unit_ids=np.arange(1, n_neurons + 1),
        cell_motor_coordinates=rng.normal(size=(n_neurons, 3)).astype(np.float32),
        area=np.array(["V1"] * n_neurons),
        layer=np.array(["L2/3"] * n_neurons),
        behavior=rng.normal(size=(len(tiers), 3)).astype(np.float32),
        pupil_center=rng.normal(size=(len(tiers), 2)).astype(np.float32),
    )


@pytest.fixture
def scan_folder(tmp_path):
    """A valid Sensorium folder written by v1twin.sensorium.write_sensorium, and its arrays."""
    from v1twin.sensorium import write_sensorium

    arrays = make_scan_arrays()
    folder = write_sensorium(
        tmp_path / "static11111-2-3-Test", animal_id=11111, session=2, scan_idx=3, **arrays
    )
    return folder, arrays
