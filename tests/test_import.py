"""Import: what was written reads back equal; bad input is refused before anything is written."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest

from v1twin import cli
from v1twin.recording import RecordingError, read_netcdf
from v1twin.sensorium import read_sensorium


def _counts(recording):
    scan = recording.Scan
    return tuple(len(t()) for t in (scan, scan.Neuron, scan.Image, scan.Trial))


def test_round_trip(recording_tables, scan_folder):
    folder, arrays = scan_folder
    rec = read_sensorium(folder)
    assert rec.scan_key == "11111-2-3"
    assert recording_tables.insert_recording(rec)
    back = recording_tables.load_scan("11111-2-3")
    np.testing.assert_array_equal(back["responses"], arrays["responses"])
    np.testing.assert_array_equal(back["images"], arrays["images"])
    np.testing.assert_array_equal(back["tiers"], arrays["tiers"])
    np.testing.assert_array_equal(back["image_ids"], arrays["image_ids"])
    np.testing.assert_array_equal(back["unit_ids"], arrays["unit_ids"])
    trial = (recording_tables.Scan.Trial & {"trial_idx": 5}).fetch1()
    np.testing.assert_allclose(trial["behavior"], arrays["behavior"][5])
    np.testing.assert_allclose(trial["pupil_center"], arrays["pupil_center"][5])
    neurons = (recording_tables.Scan.Neuron).to_dicts(order_by="neuron_idx")
    np.testing.assert_allclose(
        [n["motor_x"] for n in neurons], arrays["cell_motor_coordinates"][:, 0], rtol=1e-6
    )


def test_importing_twice_duplicates_nothing(recording_tables, scan_folder, capsys):
    folder, _ = scan_folder
    assert cli.main(["import", "sensorium", str(folder)]) == 0
    before = _counts(recording_tables)
    assert cli.main(["import", "sensorium", str(folder)]) == 0
    assert _counts(recording_tables) == before
    assert "already imported" in capsys.readouterr().out


def test_zipped_folder_reads_the_same(scan_folder, tmp_path):
    folder, arrays = scan_folder
    archive = tmp_path / "static11111-2-3-Test.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in folder.rglob("*.npy"):
            zf.write(path, path.relative_to(folder.parent))
    rec = read_sensorium(archive)
    assert rec.scan_key == "11111-2-3"
    np.testing.assert_array_equal(rec.responses, arrays["responses"])


def test_netcdf_reads_the_same(scan_folder, tmp_path):
    import xarray as xr

    folder, arrays = scan_folder
    rec = read_sensorium(folder)
    ds = xr.Dataset(
        {
            "responses": (("trial", "neuron"), rec.responses),
            "images": (("image", "height", "width"), rec.images),
            "tier": ("trial", rec.tiers),
            "image_id": ("trial", rec.image_ids),
        },
        coords={"image": rec.image_index, "neuron": rec.unit_ids},
        attrs={"animal_id": 5, "session": 6, "scan_idx": 7},
    )
    path = tmp_path / "lab.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    back = read_netcdf(path)
    assert back.scan_key == "5-6-7"
    np.testing.assert_array_equal(back.responses, rec.responses)
    np.testing.assert_array_equal(back.images, rec.images)


# -- bad input: (name, how to break a valid folder, text the error must contain) ----------------
def _corrupt_npy(folder):
    (folder / "data/responses/3.npy").write_bytes(b"\x93NUMPY garbage")


def _drop_file(folder):
    (folder / "data/images/7.npy").unlink()


def _nan_response(folder):
    r = np.load(folder / "data/responses/2.npy")
    r[0] = np.nan
    np.save(folder / "data/responses/2.npy", r)


def _single_repeat(folder):
    tiers = np.load(folder / "meta/trials/tiers.npy")
    ids = np.load(folder / "meta/trials/frame_image_id.npy")
    first_test = np.flatnonzero(tiers == "test")[0]
    ids[first_test] = 99999
    np.save(folder / "meta/trials/frame_image_id.npy", ids)


def _zero_variance(folder):
    tiers = np.load(folder / "meta/trials/tiers.npy")
    for i in np.flatnonzero(tiers == "train"):
        r = np.load(folder / f"data/responses/{i}.npy")
        r[4] = 1.0
        np.save(folder / f"data/responses/{i}.npy", r)


def _wrong_image_shape(folder):
    np.save(folder / "data/images/5.npy", np.zeros((1, 10, 16), np.float32))


def _unknown_tier(folder):
    tiers = np.load(folder / "meta/trials/tiers.npy")
    tiers[0] = "training"
    np.save(folder / "meta/trials/tiers.npy", tiers)


def _wrong_response_length(folder):
    np.save(folder / "data/responses/1.npy", np.zeros(11, np.float32))


BAD_INPUT = [
    ("corrupt .npy", _corrupt_npy, "data/responses/3.npy"),
    ("mismatched file counts", _drop_file, "7.npy"),
    ("NaN responses", _nan_response, "NaN"),
    ("test image with one repeat", _single_repeat, "at least two repeats"),
    ("neuron with zero variance", _zero_variance, "unit_id [5]"),
    ("image of the wrong shape", _wrong_image_shape, "data/images/5.npy"),
    ("unknown tier name", _unknown_tier, "training"),
    ("response vector of the wrong length", _wrong_response_length, "data/responses/1.npy"),
]


@pytest.mark.parametrize("name, break_it, message", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_refused_and_database_unchanged(
    name, break_it, message, recording_tables, scan_folder, tmp_path, capsys
):
    folder, _ = scan_folder
    good = shutil.copytree(folder, tmp_path / "static22222-1-1-Good")
    assert cli.main(["import", "sensorium", str(good)]) == 0  # something already stored
    before = _counts(recording_tables)
    break_it(folder)
    with pytest.raises(RecordingError, match=pytest.importorskip("re").escape(message)):
        read_sensorium(folder)
    assert cli.main(["import", "sensorium", str(good), str(folder)]) == 2
    assert message in capsys.readouterr().err
    assert _counts(recording_tables) == before


def test_truncated_zip_is_refused(scan_folder, tmp_path):
    folder, _ = scan_folder
    archive = tmp_path / "static11111-2-3-Test.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in folder.rglob("*.npy"):
            zf.write(path, path.relative_to(folder.parent))
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(RecordingError, match="static11111-2-3-Test.zip"):
        read_sensorium(archive)


def test_missing_path_is_named(tmp_path):
    with pytest.raises(RecordingError, match="no-such-scan"):
        read_sensorium(tmp_path / "no-such-scan")


def test_import_holds_one_scan_at_a_time(recording_tables, scan_folder, tmp_path, monkeypatch):
    """Importing several scans keeps at most one Recording (its images) alive while reading the
    next: a Sensorium scan's images are 0.9 GB, five at once would not fit a small machine."""
    import gc
    import weakref

    import v1twin.sensorium

    folder, _ = scan_folder
    folders = [shutil.copytree(folder, tmp_path / f"static3333{i}-1-1-Copy") for i in range(3)]
    refs, most = [], []
    read = v1twin.sensorium.read_sensorium

    def counting_reader(path, progress=True):
        gc.collect()
        most.append(sum(r() is not None for r in refs))
        rec = read(path, progress)
        refs.append(weakref.ref(rec))
        return rec

    monkeypatch.setattr(v1twin.sensorium, "read_sensorium", counting_reader)
    assert cli.main(["import", "sensorium", "-q", *map(str, folders)]) == 0
    assert len(recording_tables.Scan()) == 3
    assert len(most) == 6 and max(most) == 0  # checked, then read again to insert, one by one


def test_chunked_insert_and_fetch_give_the_whole_scan(recording_tables, tmp_path):
    """Images and trials inserted a few rows per statement and images fetched 5 at a time (and
    area-averaged onto a canvas as they come) read back as the scan written."""
    from conftest import make_scan_arrays

    from twin.data import to_canvas
    from v1twin.sensorium import write_sensorium

    arrays = make_scan_arrays(height=18, width=32)
    folder = write_sensorium(
        tmp_path / "static11111-2-3-Test", animal_id=11111, session=2, scan_idx=3, **arrays
    )
    # 2,304 bytes an image, 48 a trial: 1 image and 52 of the 62 trials per statement
    assert recording_tables.insert_recording(read_sensorium(folder), insert_bytes=2500)
    whole = recording_tables.load_scan("11111-2-3", chunk=5)
    np.testing.assert_array_equal(whole["images"], arrays["images"])
    np.testing.assert_array_equal(whole["responses"], arrays["responses"])
    small = recording_tables.load_scan("11111-2-3", canvas=(9, 16), chunk=5)
    np.testing.assert_allclose(small["images"], to_canvas(arrays["images"], (9, 16)), rtol=1e-6)
    assert small["images"].shape == (len(arrays["tiers"]), 1, 9, 16)
