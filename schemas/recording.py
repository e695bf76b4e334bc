"""Recordings: scans, their neurons, images and trials.

A scan is imported whole, in one transaction, by :func:`insert_recording`; its neurons, images
and trials are part tables, so a scan is never half there. Arrays are stored one blob per row
(a trial's response vector, an image) as uncompressed ``<array>`` values, inserted in bulk.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from . import codecs, dj, new_schema, show_progress  # noqa: F401  (codecs registers <array>)

schema = new_schema()


@schema
class Scan(dj.Manual):
    definition = """
    # one recording session: a Sensorium folder or a lab's netCDF file
    scan_key        : varchar(32)   # {animal_id}-{session}-{scan_idx}
    ---
    animal_id       : int32
    session         : int32
    scan_idx        : int32
    n_neurons       : int32
    n_trials        : int32
    image_height    : int32         # pixels
    image_width     : int32         # pixels
    source          : varchar(1024) # path it was imported from
    """

    class Neuron(dj.Part):
        definition = """
        -> master
        unit_id         : int64
        ---
        neuron_idx      : int32         # column in the trials' response vectors
        area            : varchar(32)
        layer           : varchar(32)
        motor_x         : float32       # cortical position, um
        motor_y         : float32
        motor_z         : float32
        """

    class Image(dj.Part):
        definition = """
        -> master
        image_id        : int64
        ---
        image           : <array>       # (H, W) float32, raw stored units
        """

    class Trial(dj.Part):
        definition = """
        -> master
        trial_idx       : int32
        ---
        tier            : enum('train', 'validation', 'test')
        -> Scan.Image
        responses       : <array>       # (n_neurons,) float32, in neuron_idx order
        behavior = null : <array>       # (B,) float32
        pupil_center = null : <array>   # (2,) float32
        """


#: Bytes of array values per INSERT statement: DataJoint builds one query string of all the rows
#: it is given (escaped, so several copies of the data), so the scan's images and trials go in
#: statements of about this size (a Sensorium scan holds 0.75 GB of images, 0.2 GB of responses).
INSERT_BYTES = 32 * 2**20


def insert_recording(rec, insert_bytes: int = INSERT_BYTES) -> bool:
    """Insert a validated :class:`v1twin.recording.Recording`; False where the scan exists.

    Importing the same scan twice changes nothing, also when two processes import it at once:
    the second's insert of the scan row waits for the first's transaction and, once that has
    committed, finds the key taken, so its own transaction is rolled back and it returns False.
    All rows go in one transaction, so a failure part way leaves the database as it was.
    Images and trials are inserted in statements of about ``insert_bytes`` of array data.
    """
    rec.validate()
    key = {"scan_key": rec.scan_key}
    if Scan & key:
        return False
    try:
        _insert_rows(rec, key, insert_bytes)
    except dj.errors.DuplicateError:
        if Scan & key:  # imported by another process since the check above
            return False
        raise
    return True


def _trial_row(rec, key: dict, i: int) -> dict:
    return dict(
        key,
        trial_idx=i,
        tier=str(rec.tiers[i]),
        image_id=int(rec.image_ids[i]),
        responses=rec.responses[i].astype(np.float32),
        behavior=None if rec.behavior is None else rec.behavior[i],
        pupil_center=None if rec.pupil_center is None else rec.pupil_center[i],
    )


def _insert_chunked(table, make_row, n_rows: int, row_bytes: int, insert_bytes: int, desc: str):
    """Insert ``make_row(i)`` for i < n_rows, about ``insert_bytes`` of arrays per statement."""
    chunk = max(1, insert_bytes // max(1, row_bytes))
    for start in tqdm(
        range(0, n_rows, chunk),
        desc=desc,
        leave=False,
        disable=not show_progress() or n_rows <= chunk,
    ):
        table.insert([make_row(i) for i in range(start, min(n_rows, start + chunk))])


def _insert_rows(rec, key: dict, insert_bytes: int) -> None:
    """The scan's master and part rows, in one transaction."""
    n_trials, n_neurons = rec.responses.shape
    height, width = rec.images.shape[1:]
    with Scan.connection.transaction:
        Scan.insert1(
            dict(
                key,
                animal_id=rec.animal_id,
                session=rec.session,
                scan_idx=rec.scan_idx,
                n_neurons=n_neurons,
                n_trials=n_trials,
                image_height=height,
                image_width=width,
                source=str(rec.source)[:1024],
            )
        )
        Scan.Neuron.insert(
            dict(
                key,
                unit_id=int(u),
                neuron_idx=i,
                area=str(a),
                layer=str(la),
                motor_x=float(c[0]),
                motor_y=float(c[1]),
                motor_z=float(c[2]),
            )
            for i, (u, a, la, c) in enumerate(
                zip(rec.unit_ids, rec.area, rec.layer, rec.motor_coordinates)
            )
        )
        _insert_chunked(
            Scan.Image,
            lambda i: dict(
                key, image_id=int(rec.image_index[i]), image=rec.images[i].astype(np.float32)
            ),
            len(rec.images),
            4 * height * width,
            insert_bytes,
            f"insert {rec.scan_key} images",
        )
        _insert_chunked(
            Scan.Trial,
            lambda i: _trial_row(rec, key, i),
            n_trials,
            4 * n_neurons,
            insert_bytes,
            f"insert {rec.scan_key} trials",
        )


def load_scan(scan_key: str, canvas=None, chunk: int = 512) -> dict[str, np.ndarray]:
    """Everything a model needs from one scan, as arrays.

    canvas: (h, w) to area-average the images onto (`twin.data.to_canvas`), image by image as
    they are fetched, ``chunk`` at a time, so that the stored resolution is never held for every
    trial (a Sensorium scan's 6,000 trials at 144 x 256 are 0.9 GB). None: stored size.

    Returns:
        images (T, 1, H, W) float32 per trial, responses (T, N) float32, tiers (T,) str,
        image_ids (T,) int64, unit_ids (N,) int64 in response-column order, behavior (T, B)
        and pupil_center (T, 2) float32 (None where the scan has none).
    """
    key = {"scan_key": scan_key}
    if not Scan & key:
        raise KeyError(f"scan {scan_key!r} is not in {Scan.full_table_name}")
    trial_idx, tiers, image_ids, responses, behavior, pupil = (Scan.Trial & key).to_arrays(
        "trial_idx",
        "tier",
        "image_id",
        "responses",
        "behavior",
        "pupil_center",
        order_by="trial_idx",
    )
    ids, imgs = _images(key, canvas, chunk)
    lookup = np.searchsorted(ids, image_ids.astype(np.int64))
    unit_ids = (Scan.Neuron & key).to_arrays("unit_id", order_by="neuron_idx")
    return dict(
        images=imgs[lookup],
        responses=np.stack(responses).astype(np.float32, copy=False),
        tiers=tiers.astype(str),
        image_ids=image_ids.astype(np.int64),
        unit_ids=np.asarray(unit_ids).astype(np.int64),
        behavior=_per_trial(behavior),
        pupil_center=_per_trial(pupil),
    )


def _per_trial(values) -> np.ndarray | None:
    """Stored per-trial arrays (NULL where not recorded) -> (T, C) float32, or None."""
    if len(values) == 0 or any(v is None for v in values):
        return None
    return np.stack(values).astype(np.float32, copy=False)


def _images(key: dict, canvas, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """The scan's image ids (I,) ascending and images (I, 1, h, w) float32, fetched ``chunk`` at a
    time and area-averaged onto ``canvas`` (None: as stored)."""
    from twin.data import to_canvas

    ids = np.asarray((Scan.Image & key).to_arrays("image_id", order_by="image_id"), np.int64)
    out = []
    for start in range(0, len(ids), chunk):
        lo, hi = ids[start], ids[min(len(ids), start + chunk) - 1]
        part = Scan.Image & key & f"image_id between {lo} and {hi}"
        arr = np.stack(part.to_arrays("image", order_by="image_id"))[:, None]
        arr = arr.astype(np.float32, copy=False)
        out.append(arr if canvas is None else to_canvas(arr, canvas, f"scan {key['scan_key']!r}"))
    return ids, np.concatenate(out)
