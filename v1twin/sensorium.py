"""The Sensorium / neuralpredictors "static" folder format, zipped or not.

Layout of one scan (T trials, N neurons)::

    static{animal}-{session}-{scan_idx}-{anything}/
        data/images/{i}.npy          (1, H, W)   one per trial, i = 0..T-1
        data/responses/{i}.npy       (N,)
        data/behavior/{i}.npy        (B,)        optional
        data/pupil_center/{i}.npy    (2,)        optional
        meta/trials/tiers.npy        (T,) str    train / validation / test
        meta/trials/frame_image_id.npy (T,) int  repeats share an id
        meta/trials/trial_idx.npy    (T,) int
        meta/neurons/{unit_ids,animal_ids,sessions,scan_idx,area,layer}.npy  (N,)
        meta/neurons/cell_motor_coordinates.npy  (N, 3)
        meta/statistics/{key}/all/{mean,std,min,max,median}.npy   written, not read (below)

:func:`write_sensorium` also writes the statistics over all trials that neuralpredictors'
``NeuroNormalizer`` (the Sensorium loaders' default transform) reads: scalars for images,
per-channel (N,) / (B,) / (2,) for responses, behavior and pupil_center.
:func:`read_sensorium` checks every file before it returns; errors name the file.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm.auto import tqdm

from .recording import (
    TIERS,
    TRIAL_INPUTS,
    Recording,
    RecordingError,
    scan_key_from_name,
    trial_input_problem,
)

DATA_KEYS = ("images", "responses", "behavior", "pupil_center")
REQUIRED_DATA = ("images", "responses")
NEURON_KEYS = (
    "unit_ids",
    "animal_ids",
    "sessions",
    "scan_idx",
    "area",
    "layer",
    "cell_motor_coordinates",
)
SKIPPED_TIERS = ("final_test",)  # Sensorium's held-out tier: responses are withheld


class _Tree:
    """Read-only view of a scan folder or of a zip holding one."""

    def __init__(self, path: Path):
        self.path = path
        if not path.exists():
            raise RecordingError(f"{path}: no such file or folder")
        self.zip = None
        if path.is_file():
            try:
                self.zip = zipfile.ZipFile(path)
                bad = self.zip.testzip()
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                raise RecordingError(f"{path}: not a readable zip archive ({err})") from err
            if bad is not None:
                raise RecordingError(f"{path}: member {bad} is corrupt (CRC mismatch)")
            self.root = self._zip_root()
        else:
            self.root = PurePosixPath("")

    def _zip_root(self) -> PurePosixPath:
        for name in self.zip.namelist():
            p = PurePosixPath(name)
            if p.parts[-3:] == ("meta", "trials", "tiers.npy"):
                return PurePosixPath(*p.parts[:-3])
        raise RecordingError(f"{self.path}: no meta/trials/tiers.npy inside the archive")

    def name(self, rel: str) -> str:
        return f"{self.path}:{self.root / rel}" if self.zip else str(self.path / rel)

    def exists(self, rel: str) -> bool:
        if self.zip:
            return any(n.startswith(str(self.root / rel)) for n in self.zip.namelist())
        return (self.path / rel).exists()

    def listdir(self, rel: str) -> list[str]:
        if self.zip:
            prefix = str(self.root / rel) + "/"
            return [
                n[len(prefix) :]
                for n in self.zip.namelist()
                if n.startswith(prefix) and n != prefix and "/" not in n[len(prefix) :]
            ]
        return [p.name for p in (self.path / rel).iterdir()]

    def load(self, rel: str) -> np.ndarray:
        try:
            if self.zip:
                with self.zip.open(str(self.root / rel)) as f:
                    return np.load(io.BytesIO(f.read()), allow_pickle=False)
            return np.load(self.path / rel, allow_pickle=False)
        except FileNotFoundError as err:
            raise RecordingError(f"{self.name(rel)}: missing") from err
        except KeyError as err:
            raise RecordingError(f"{self.name(rel)}: missing") from err
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise RecordingError(f"{self.name(rel)}: not a readable .npy file ({err})") from err


def _trial_files(tree: _Tree, key: str, n_trials: int) -> list[str]:
    """The file names ``data/{key}/{i}.npy``, checking the set is exactly 0..T-1."""
    names = [n for n in tree.listdir(f"data/{key}") if n.endswith(".npy")]
    stems = {n[:-4] for n in names}
    expected = {str(i) for i in range(n_trials)}
    if stems != expected:
        extra, missing = sorted(stems - expected)[:3], sorted(expected - stems, key=int)[:3]
        raise RecordingError(
            f"{tree.name(f'data/{key}')}: {len(stems)} files but meta/trials lists {n_trials} "
            f"trials"
            + (f"; missing {[m + '.npy' for m in missing]}" if missing else "")
            + (f"; unexpected {[e + '.npy' for e in extra]}" if extra else "")
        )
    return [f"data/{key}/{i}.npy" for i in range(n_trials)]


def _stack(
    tree: _Tree, files: list[str], key: str, progress: bool, rows: np.ndarray | None = None
) -> np.ndarray:
    """Load per-trial arrays and stack those of ``rows`` (default: all) in that order; every file
    is read and must have the first file's shape."""
    first = tree.load(files[0])
    rows = np.arange(len(files)) if rows is None else np.asarray(rows)
    slot = np.full(len(files), -1)
    slot[rows] = np.arange(len(rows))
    out = np.empty((len(rows),) + first.shape, dtype=np.float32)
    for i, rel in enumerate(
        tqdm(files, f"read {key}", leave=False, mininterval=1, disable=not progress)
    ):
        arr = tree.load(rel) if i else first
        if arr.shape != first.shape:
            raise RecordingError(
                f"{tree.name(rel)}: shape {arr.shape}, but {tree.name(files[0])} has {first.shape}"
            )
        if slot[i] >= 0:
            out[slot[i]] = arr
    return out


def read_sensorium(path: str | Path, progress: bool = True) -> Recording:
    """Read and validate one scan folder or zip; raises RecordingError naming the bad file.
    progress: a tqdm bar over each data key's trial files."""
    tree = _Tree(Path(path))
    tiers = tree.load("meta/trials/tiers.npy").astype(str)
    frame_ids = tree.load("meta/trials/frame_image_id.npy").astype(np.int64)
    n_trials = len(tiers)
    if len(frame_ids) != n_trials:
        raise RecordingError(
            f"{tree.name('meta/trials/frame_image_id.npy')}: {len(frame_ids)} entries, tiers.npy "
            f"has {n_trials}"
        )
    present = [k for k in DATA_KEYS if k in REQUIRED_DATA or tree.exists(f"data/{k}")]
    files = {k: _trial_files(tree, k, n_trials) for k in present}
    keep = ~np.isin(tiers, SKIPPED_TIERS)
    image_index, first = np.unique(frame_ids[keep], return_index=True)
    # one image per distinct id is kept (repeats are not stacked: 0.9 GB per Sensorium scan)
    shown = {"images": np.flatnonzero(keep)[first]}
    data = {k: _stack(tree, files[k], k, progress, shown.get(k)) for k in present}
    for key in set(TRIAL_INPUTS) & set(data):
        _check_trial_input(tree, files[key], key, data[key])
    neurons = {
        k: tree.load(f"meta/neurons/{k}.npy")
        for k in NEURON_KEYS
        if k not in ("animal_ids", "sessions", "scan_idx")
    }
    images = data["images"]
    if images.ndim != 4 or images.shape[1] != 1:
        raise RecordingError(
            f"{tree.name(files['images'][0])}: expected (1, H, W), got {images.shape[1:]}"
        )
    rec = Recording(
        *_scan_key(tree),
        responses=data["responses"][keep],
        tiers=tiers[keep],
        image_ids=frame_ids[keep],
        images=images[:, 0],
        image_index=image_index,
        unit_ids=neurons["unit_ids"].astype(np.int64),
        area=neurons["area"].astype(str),
        layer=neurons["layer"].astype(str),
        motor_coordinates=neurons["cell_motor_coordinates"].astype(np.float32),
        behavior=data["behavior"][keep] if "behavior" in data else None,
        pupil_center=data["pupil_center"][keep] if "pupil_center" in data else None,
        source=str(path),
        names={
            "responses": tree.name("data/responses"),
            "images": tree.name("data/images"),
            "tiers": tree.name("meta/trials/tiers.npy"),
            "image_ids": tree.name("meta/trials/frame_image_id.npy"),
            "unit_ids": tree.name("meta/neurons/unit_ids.npy"),
            "area": tree.name("meta/neurons/area.npy"),
            "layer": tree.name("meta/neurons/layer.npy"),
            "motor_coordinates": tree.name("meta/neurons/cell_motor_coordinates.npy"),
            "behavior": tree.name("data/behavior"),
            "pupil_center": tree.name("data/pupil_center"),
        },
    )
    return rec.validate()


def _check_trial_input(tree: _Tree, files: list[str], key: str, values: np.ndarray) -> None:
    """RecordingError naming the file of the first trial whose behaviour input (``key`` in
    ``TRIAL_INPUTS``, stacked (T, ...) in file order) has the wrong length or a NaN/inf."""
    problem = trial_input_problem(key, values)
    if problem:
        raise RecordingError(f"{tree.name(files[problem[0]])}: {problem[1]}")


def _scan_key(tree: _Tree) -> tuple[int, int, int]:
    key = scan_key_from_name(tree.path) or (
        scan_key_from_name(tree.root.name) if tree.zip else None
    )
    if key:
        return key
    try:
        return tuple(
            int(tree.load(f"meta/neurons/{k}.npy")[0])
            for k in ("animal_ids", "sessions", "scan_idx")
        )
    except RecordingError as err:
        raise RecordingError(
            f"{tree.path}: no scan key in the folder name (static<animal>-<session>-<scan>) nor in "
            f"meta/neurons"
        ) from err


STATISTICS = {"mean": np.mean, "std": np.std, "min": np.min, "max": np.max, "median": np.median}


def _write_statistics(folder: Path, key: str, arr: np.ndarray) -> None:
    """meta/statistics/{key}/all/*.npy over all trials: scalars for images (T, 1, H, W),
    per channel for (T, C) arrays."""
    axis = None if key == "images" else 0
    out = folder / "meta" / "statistics" / key / "all"
    out.mkdir(parents=True, exist_ok=True)
    for name, fn in STATISTICS.items():
        np.save(out / f"{name}.npy", np.asarray(fn(arr, axis=axis), dtype=np.float32))


def write_sensorium(
    folder: str | Path,
    *,
    images: np.ndarray,
    responses: np.ndarray,
    tiers: np.ndarray,
    image_ids: np.ndarray,
    unit_ids: np.ndarray,
    cell_motor_coordinates: np.ndarray,
    area: np.ndarray,
    layer: np.ndarray,
    animal_id: int,
    session: int,
    scan_idx: int,
    behavior: np.ndarray | None = None,
    pupil_center: np.ndarray | None = None,
) -> Path:
    """Write one scan in the static format.

    Args:
        images: (T, 1, H, W) per trial; responses: (T, N); tiers: (T,) str; image_ids: (T,) int;
        unit_ids, area, layer: (N,); cell_motor_coordinates: (N, 3);
        behavior: (T, B) or None; pupil_center: (T, 2) or None.
    """
    folder = Path(folder)
    unknown = set(np.unique(tiers)) - set(TIERS) - set(SKIPPED_TIERS)
    if unknown:
        raise ValueError(f"unknown tiers {sorted(unknown)}")
    per_trial = {
        "images": images,
        "responses": responses,
        "behavior": behavior,
        "pupil_center": pupil_center,
    }
    for key, arr in per_trial.items():
        if arr is None:
            continue
        (folder / "data" / key).mkdir(parents=True, exist_ok=True)
        for i, row in enumerate(arr):
            np.save(folder / "data" / key / f"{i}.npy", np.asarray(row, dtype=np.float32))
        _write_statistics(folder, key, np.asarray(arr, dtype=np.float32))
    meta = folder / "meta"
    (meta / "trials").mkdir(parents=True, exist_ok=True)
    (meta / "neurons").mkdir(parents=True, exist_ok=True)
    np.save(meta / "trials" / "tiers.npy", np.asarray(tiers).astype("<U10"))
    np.save(meta / "trials" / "frame_image_id.npy", np.asarray(image_ids, dtype=np.int64))
    np.save(meta / "trials" / "trial_idx.npy", np.arange(len(tiers), dtype=np.int64))
    n = len(unit_ids)
    neuron_meta = {
        "unit_ids": np.asarray(unit_ids, dtype=np.int64),
        "animal_ids": np.full(n, animal_id, dtype=np.int64),
        "sessions": np.full(n, session, dtype=np.int64),
        "scan_idx": np.full(n, scan_idx, dtype=np.int64),
        "area": np.asarray(area).astype(str),
        "layer": np.asarray(layer).astype(str),
        "cell_motor_coordinates": np.asarray(cell_motor_coordinates, dtype=np.float32),
    }
    for key, arr in neuron_meta.items():
        np.save(meta / "neurons" / f"{key}.npy", arr)
    return folder
