"""Faults a shared lab database sees: the same scan imported by two processes at once, a server
restart while workers populate, a corrupt model or parameter row. Real server, real processes."""

from __future__ import annotations

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
