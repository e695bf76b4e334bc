"""Faults a shared lab database sees: the same scan imported by two processes at once, a server
restart while workers populate, a corrupt model or parameter row. Real server, real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import make_scan_arrays, run_together

# Read and bind first, then insert when released: both processes find the scan absent.
_IMPORT = """
import sys
import schemas
from v1twin.sensorium import read_sensorium
rec = read_sensorium(sys.argv[1])
recording = schemas.activate()["recording"]
print("ready", flush=True)
sys.stdin.readline()
print("imported" if recording.insert_recording(rec) else "exists", flush=True)
"""


def test_same_scan_imported_by_two_processes_at_once_goes_in_once(recording_tables, tmp_path):
    """Both pass the "already there?" check; the second's insert waits for the first's
    transaction, finds the key taken, rolls back and reports the scan exists."""
    from v1twin.sensorium import write_sensorium

    arrays = make_scan_arrays(n_neurons=500, n_train=500, n_validation=50, n_test_images=10)
    folder = write_sensorium(
        tmp_path / "static22222-1-1-Twice", animal_id=22222, session=1, scan_idx=1, **arrays
    )
    done = run_together([[folder]] * 2, script=_IMPORT)
    assert [d.returncode for d in done] == [0, 0], [d.stderr[-2000:] for d in done]
    assert sorted(d.stdout.split()[-1] for d in done) == ["exists", "imported"]
    scan = recording_tables.Scan
    n_trials, n_neurons = arrays["responses"].shape
    n_images = len(set(arrays["image_ids"].tolist()))
    counts = (len(scan()), len(scan.Neuron()), len(scan.Image()), len(scan.Trial()))
    assert counts == (1, n_neurons, n_images, n_trials)


CANVAS = (18, 32)  # the Sensorium screen's aspect ratio (its default pixels per degree), even


def _untrained_model(model, dataset: dict, seed: int) -> dict:
    """A TrainedModel row for an untrained twin (seed picks its ModelConfig); returns its key."""
    from twin.training import build_model

    key = dict(dataset, **model.ModelConfig.add("cpu", canvas=CANVAS, seed=seed))
    twin = build_model((model.ModelConfig & key).fetch1("config"), model.load_scans(key, CANVAS))
    weights = {k: v.detach().numpy() for k, v in twin.state_dict().items()}
    stats = dict(epochs=0, train_seconds=0, best_val_corr=0, test_corr=0, feve=0)
    row = dict(key, architecture=twin.config, weights=weights, device="cpu", **stats)
    model.TrainedModel.insert1(row, allow_direct_insert=True)
    return key


def test_corrupt_model_or_parameter_row_is_an_error_in_the_job_table(
    db, recording_tables, tmp_path
):
    """Three stored models: weights that do not decode, an architecture that does not build, and
    a good one. A worker records an error naming each bad row and computes the good one."""
    import datajoint as dj

    from v1twin.sensorium import read_sensorium, write_sensorium

    arrays = make_scan_arrays(height=CANVAS[0], width=CANVAS[1])
    folder = write_sensorium(
        tmp_path / "static3-1-1-Corrupt", animal_id=3, session=1, scan_idx=1, **arrays
    )
    model, readout = db["model"], db["clustering"].Readout
    recording_tables.insert_recording(read_sensorium(folder))
    dataset = model.Dataset.add()
    corrupt_file, corrupt_params, good = (_untrained_model(model, dataset, s) for s in (7, 8, 9))
    table = model.TrainedModel.full_table_name
    dj.conn().query(  # the stored model file: bytes that are no blob
        f"UPDATE {table} SET weights = %s WHERE model_hash = %s",
        args=(b"\x00not a blob", corrupt_file["model_hash"]),
    )
    model.TrainedModel.update1(dict(corrupt_params, architecture={"core": "corrupt"}))
    mine = [corrupt_file, corrupt_params, good]
    try:
        result = readout.populate(mine, reserve_jobs=True, suppress_errors=True)
        assert result["success_count"] == 1
        errors = (readout().jobs.errors & mine).to_dicts()
        assert sorted(e["model_hash"] for e in errors) == sorted(
            k["model_hash"] for k in (corrupt_file, corrupt_params)
        )
        for e in errors:
            assert "the stored model does not load" in e["error_message"]
            assert e["model_hash"] in e["error_message"]  # names the row at fault
        assert len(readout & mine) == 1 and len(readout & good) == 1
        assert len(readout.Unit & good) == len(arrays["unit_ids"])
        assert len(readout.Unit & [corrupt_file, corrupt_params]) == 0
    finally:
        (readout().jobs & mine).delete_quick()


def test_meis_in_small_chunks_equal_one_batch(db, recording_tables, tmp_path):
    """MEI.make with chunk_size=5 (12 neurons: chunks of 5, 5, 2) stores the MEIs of one batch."""
    from insilico.twin_adapter import TwinResponseModel
    from v1twin.sensorium import read_sensorium, write_sensorium

    arrays = make_scan_arrays(height=CANVAS[0], width=CANVAS[1])
    folder = write_sensorium(
        tmp_path / "static4-1-1-Chunks", animal_id=4, session=1, scan_idx=1, **arrays
    )
    model, insilico = db["model"], db["insilico"]
    recording_tables.insert_recording(read_sensorium(folder))
    key = dict(_untrained_model(model, model.Dataset.add(), seed=11))
    key.update(insilico.InSilicoParams.add(mei_steps=5))
    insilico.MEI.populate(key, make_kwargs={"chunk_size": 5})
    chunked = np.stack((insilico.MEI.Unit & key).to_arrays("image", order_by="unit_id"))
    rm = TwinResponseModel(model.load_model(key, device="cpu"), "4-1-1")
    p = insilico._params(key)
    norm = p["mei_norm"] * rm.pixels_per_degree
    whole, _ = insilico.scan_meis(rm, norm, p["mei_steps"], chunk_size=len(arrays["unit_ids"]))
    assert chunked.shape == whole.shape == (12, *CANVAS)
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-5)
    assert not np.allclose(whole[0], whole[1])  # each neuron its own image


@pytest.fixture
def own_server(monkeypatch):
    """A database server of this test's own (home under /tmp, free port), which it may stop;
    subprocesses reach it through V1TWIN_HOME. Removed afterwards."""
    import shutil
    import socket
    import tempfile
    from pathlib import Path

    from schemas import connection
    from v1twin.server import LocalServer

    if connection.external_credentials() is not None:
        pytest.skip("DJ_HOST is set: this test stops a server of its own")
    home = Path(tempfile.mkdtemp(prefix="v1twin-restart-"))
    home.chmod(0o755)  # as root the server runs as 'postgres', which must enter it
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("V1TWIN_HOME", str(home))
    monkeypatch.setenv("V1TWIN_DB_PORT", str(port))
    monkeypatch.setenv("V1TWIN_SCHEMA_PREFIX", "restart")
    server = LocalServer.default()
    creds = server.start()
    yield server, creds
    server.stop()
    shutil.rmtree(home, ignore_errors=True)


def _v1twin(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "v1twin.cli", *map(str, args)],
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _sql(creds, query: str):
    from v1twin.server import pg_connect

    conn = pg_connect(creds)
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            return cur.fetchall()
    finally:
        conn.close()


@pytest.mark.slow
def test_worker_survives_a_server_restart_mid_make_and_computes_each_key_once(own_server, tmp_path):
    """The server is stopped (fast: sessions aborted) while a worker trains, and started 3 s
    later: the worker says it lost the server, waits, reconnects, computes the key again from
    scratch, and exits 0; no partial rows, the key computed once, nothing left in the queue."""
    from v1twin.sensorium import write_sensorium

    server, creds = own_server
    arrays = make_scan_arrays(height=10, width=16, n_train=200, n_validation=40)
    folder = write_sensorium(
        tmp_path / "static5-1-1-R", animal_id=5, session=1, scan_idx=1, **arrays
    )
    assert _v1twin("import", "sensorium", folder).wait(timeout=300) == 0
    config = tmp_path / "tiny.toml"
    # long enough (no early stop) that the server is stopped inside make() on a quiet machine too
    config.write_text("[model]\nmax_epochs = 200\npatience = 200\ncanvas = [10, 16]\n")
    worker = _v1twin("worker", "model", "--config", config, "--reconnect-timeout", 120)
    jobs = '"restart_model"."~~trained_model"'
    deadline = time.monotonic() + 300
    while not _reserved(creds, jobs):
        assert worker.poll() is None, worker.communicate()
        assert time.monotonic() < deadline, "the worker never reserved a key"
        time.sleep(0.5)
    time.sleep(2)  # inside make(): training
    server.stop()
    time.sleep(3)
    server.start()
    out, err = worker.communicate(timeout=600)
    assert worker.returncode == 0, err[-3000:]
    assert "lost the database server" in err and "reconnected" in err, err[-3000:]
    model, unit = '"restart_model"."__trained_model"', '"restart_model"."__trained_model__unit"'
    assert _sql(creds, f"SELECT count(*) FROM {model}") == [(1,)]
    assert _sql(creds, f"SELECT count(*) FROM {unit}") == [(len(arrays["unit_ids"]),)]
    assert _sql(creds, f"SELECT status, count(*) FROM {jobs} GROUP BY status") == [("success", 1)]


def _reserved(creds, jobs: str) -> bool:
    try:
        return _sql(creds, f"SELECT count(*) FROM {jobs} WHERE status = 'reserved'")[0][0] > 0
    except Exception:  # noqa: BLE001 - the queue is declared by the worker's start-up
        return False
