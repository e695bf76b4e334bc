"""One scan's recording in memory, validated, ready to insert: the unit of import.

Readers (:mod:`v1twin.sensorium`, :func:`read_netcdf`) build a :class:`Recording`; its
:meth:`Recording.validate` raises :class:`RecordingError` naming the file or key at fault,
and nothing touches the database until it passed.

Shapes: T trials, N neurons, I distinct images of H x W pixels (raw stored units, e.g. 0-255).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TIERS = ("train", "validation", "test")

#: values per trial of the optional behaviour inputs (Sensorium: pupil dilation, its derivative,
#: running speed; the pupil centre's x, y)
TRIAL_INPUTS = {"behavior": 3, "pupil_center": 2}


class RecordingError(ValueError):
    """Bad input: the message names the file or key at fault."""


@dataclass
class Recording:
    """A scan: trials of images and neuron responses.

    Attributes:
        animal_id, session, scan_idx: the scan key ``{animal_id}-{session}-{scan_idx}``.
        responses: (T, N) float32, one row per trial.
        tiers: (T,) str, each in :data:`TIERS`.
        image_ids: (T,) int64, the image shown in each trial (repeats share an id).
        images: (I, H, W) float32, one per distinct image id, in ``image_index`` order.
        image_index: (I,) int64, the id of each row of ``images``.
        unit_ids: (N,) int64; area, layer: (N,) str; motor_coordinates: (N, 3) float32 (um).
        behavior: (T, 3) float32 or None; pupil_center: (T, 2) float32 or None (finite;
            :data:`TRIAL_INPUTS`).
        source: where it was read from, for messages and provenance.
    """

    animal_id: int
    session: int
    scan_idx: int
    responses: np.ndarray
    tiers: np.ndarray
    image_ids: np.ndarray
    images: np.ndarray
    image_index: np.ndarray
    unit_ids: np.ndarray
    area: np.ndarray
    layer: np.ndarray
    motor_coordinates: np.ndarray
    behavior: np.ndarray | None = None
    pupil_center: np.ndarray | None = None
    source: str = ""
    names: dict[str, str] = field(default_factory=dict)  # field -> file/key it came from

    @property
    def scan_key(self) -> str:
        return f"{self.animal_id}-{self.session}-{self.scan_idx}"

    def _where(self, name: str) -> str:
        return self.names.get(name, f"{self.source}:{name}")

    def validate(self) -> Recording:
        """Check shapes, values, tiers and repeats; raise RecordingError naming the culprit."""
        n_trials, n_neurons = _shape2(self.responses, self._where("responses"))
        for name in (
            ("tiers", "image_ids")
            + (("behavior",) if self.behavior is not None else ())
            + (("pupil_center",) if self.pupil_center is not None else ())
        ):
            if len(getattr(self, name)) != n_trials:
                raise RecordingError(
                    f"{self._where(name)}: {len(getattr(self, name))} entries, "
                    f"but {self._where('responses')} has {n_trials} trials"
                )
        for name in ("unit_ids", "area", "layer", "motor_coordinates"):
            if len(getattr(self, name)) != n_neurons:
                raise RecordingError(
                    f"{self._where(name)}: {len(getattr(self, name))} neurons, "
                    f"but responses have {n_neurons}"
                )
        _check_finite(self.responses, self._where("responses"))
        for name in TRIAL_INPUTS:
            problem = trial_input_problem(name, getattr(self, name))
            if problem:
                raise RecordingError(f"{self._where(name)}: {problem[1]}")
        self._check_tiers()
        self._check_images()
        self._check_repeats()
        self._check_variance()
        return self

    def _check_tiers(self) -> None:
        unknown = sorted(set(np.unique(self.tiers)) - set(TIERS))
        if unknown:
            raise RecordingError(
                f"{self._where('tiers')}: unknown tier names {unknown}; expected {list(TIERS)}"
            )
        if not np.any(self.tiers == "train"):
            raise RecordingError(f"{self._where('tiers')}: no trial in the 'train' tier")

    def _check_images(self) -> None:
        if self.images.ndim != 3:
            raise RecordingError(
                f"{self._where('images')}: expected (images, H, W), got {self.images.shape}"
            )
        _check_finite(self.images, self._where("images"))
        missing = np.setdiff1d(self.image_ids, self.image_index)
        if missing.size:
            raise RecordingError(
                f"{self._where('image_ids')}: trials show image ids {missing[:5].tolist()} with no "
                f"image"
            )

    def _check_repeats(self) -> None:
        test_ids = self.image_ids[self.tiers == "test"]
        if test_ids.size == 0:
            raise RecordingError(
                f"{self._where('tiers')}: no trial in the 'test' tier (repeated images are needed)"
            )
        ids, counts = np.unique(test_ids, return_counts=True)
        single = ids[counts < 2]
        if single.size:
            raise RecordingError(
                f"{self._where('image_ids')}: test images {single[:5].tolist()} are shown only "
                f"once; "
                "test images need at least two repeats"
            )

    def _check_variance(self) -> None:
        train = self.responses[self.tiers == "train"]
        flat = np.flatnonzero(train.std(axis=0) == 0)
        if flat.size:
            raise RecordingError(
                f"{self._where('responses')}: neurons with unit_id "
                f"{self.unit_ids[flat[:5]].tolist()} "
                "have zero variance over the train tier"
            )


def trial_input_problem(name: str, values) -> tuple[int, str] | None:
    """(trial, what is wrong) with a behaviour input (``name`` in :data:`TRIAL_INPUTS`), an array
    of one row per trial; None when it is None or every row holds its number of finite values.
    A wrong shape is reported at trial 0."""
    if values is None:
        return None
    values, width = np.asarray(values), TRIAL_INPUTS[name]
    if values.ndim != 2 or values.shape[1] != width:
        return 0, f"{name} must be ({width},) per trial, got {values.shape[1:]}"
    bad = np.flatnonzero(~np.isfinite(values).all(1))
    if bad.size:
        row = int(bad[0])
        return row, f"{name} of trial {row} is {values[row].tolist()} ({bad.size} not finite)"
    return None


def _shape2(array: np.ndarray, where: str) -> tuple[int, int]:
    if array.ndim != 2 or 0 in array.shape:
        raise RecordingError(
            f"{where}: expected a non-empty (trials, neurons) array, got shape {array.shape}"
        )
    return array.shape


def _check_finite(array: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        first = np.argwhere(bad)[0].tolist()
        raise RecordingError(f"{where}: {int(bad.sum())} NaN/inf values (first at index {first})")


SCAN_NAME = re.compile(r"static(\d+)-(\d+)-(\d+)")


def scan_key_from_name(path: str | Path) -> tuple[int, int, int] | None:
    """``static23964-4-22-GrayImageNet-...`` -> (23964, 4, 22); None where the name has no key."""
    match = SCAN_NAME.search(Path(path).name)
    return tuple(int(g) for g in match.groups()) if match else None


def read_netcdf(path: str | Path) -> Recording:
    """A scan stored by a lab's own tools as netCDF/xarray.

    Expected variables: ``responses`` (trial, neuron), ``images`` (image, height, width),
    ``tier`` (trial) and ``image_id`` (trial); coordinate ``image`` holds each image's id and
    ``neuron`` the unit ids. Optional: ``area``, ``layer`` (neuron), ``motor_coordinates``
    (neuron, xyz), ``behavior`` (trial, behavior), ``pupil_center`` (trial, xy). Attributes
    ``animal_id``, ``session``, ``scan_idx`` give the scan key (else the file name).
    """
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise RecordingError(f"{path}: no such file")
    try:
        ds = xr.load_dataset(path)
    except Exception as err:
        raise RecordingError(
            f"{path}: not a readable netCDF file ({type(err).__name__}: {err})"
        ) from err
    for var in ("responses", "images", "tier", "image_id"):
        if var not in ds:
            raise RecordingError(f"{path}: variable {var!r} is missing")
    if ds["responses"].dims != ("trial", "neuron"):
        raise RecordingError(
            f"{path}:responses has dims {ds['responses'].dims}, expected ('trial', 'neuron')"
        )
    key = (
        tuple(int(ds.attrs[k]) for k in ("animal_id", "session", "scan_idx"))
        if "animal_id" in ds.attrs
        else scan_key_from_name(path)
    )
    if key is None:
        raise RecordingError(
            f"{path}: no animal_id/session/scan_idx attributes and no scan key in the file name"
        )
    n = ds.sizes["neuron"]

    def optional(name: str, default):
        return ds[name].values if name in ds else default

    return Recording(
        *key,
        responses=ds["responses"].values.astype(np.float32),
        tiers=ds["tier"].values.astype(str),
        image_ids=ds["image_id"].values.astype(np.int64),
        images=ds["images"].values.astype(np.float32),
        image_index=(
            ds["image"].values if "image" in ds.coords else np.arange(ds.sizes["image"])
        ).astype(np.int64),
        unit_ids=(ds["neuron"].values if "neuron" in ds.coords else np.arange(n)).astype(np.int64),
        area=optional("area", np.full(n, "unknown")).astype(str),
        layer=optional("layer", np.full(n, "unknown")).astype(str),
        motor_coordinates=optional("motor_coordinates", np.zeros((n, 3))).astype(np.float32),
        behavior=None if "behavior" not in ds else ds["behavior"].values.astype(np.float32),
        pupil_center=None
        if "pupil_center" not in ds
        else ds["pupil_center"].values.astype(np.float32),
        source=str(path),
        names={v: f"{path}:{v}" for v in ("responses", "images", "tiers", "image_ids")},
    )
