"""The twin: hyper-parameter sets, trained models with per-neuron metrics, and the GLM baseline.

``TrainedModel`` stores the weights (a dict of arrays) and the architecture (``Twin.config``),
so :func:`load_model` rebuilds the model without any data loader.

A model trained elsewhere (``v1twin import model``) is an :class:`ExternalModel`: a ModelConfig
of preset ``"external"`` whose TrainedModel row is inserted by :meth:`ExternalModel.add` (never
trained by populate), with ``architecture = {"external": spec}`` (see :func:`external_spec`);
:func:`load_external` rebuilds its module (``insilico.external``).
"""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import torch

from insilico import external
from twin.data import ScanData, to_canvas
from twin.glm import DT_ALPHAS, PoissonGLM
from twin.metrics import (
    correlation,
    evaluate,
    oracle_correlation,
    prediction_scores,
    single_trial_correlation,
)
from twin.model import Twin
from twin.presets import get_preset
from twin.training import TrainConfig, build_model, fit

from . import codecs, dj, new_schema, recording, show_progress  # noqa: F401  (codecs registers <array>)

schema = new_schema()


def config_hash(config: dict) -> str:
    """md5 of the canonical JSON of a parameter set: equal parameters, equal key."""
    return hashlib.md5(json.dumps(config, sort_keys=True).encode()).hexdigest()


@schema
class ModelConfig(dj.Lookup):
    definition = """
    # architecture + training hyper-parameters, deduplicated by hash
    model_hash      : char(32)
    ---
    preset          : varchar(32)   # preset it started from ('custom' if none)
    config          : json          # {"core", "readout", "downsample", "output", "canvas", "train"}
    """

    @classmethod
    def add(
        cls,
        preset: str = "cpu",
        canvas=None,
        glm_alphas: int = len(DT_ALPHAS),
        standardize_responses: bool = True,
        behavior: bool = True,
        **train_overrides,
    ) -> dict:
        """Insert a preset (with optional TrainConfig overrides, model canvas (H, W), default the
        preset's, the number of L2 strengths the GLM baseline chooses from, log-spaced over
        DT's range (default DT's 48), whether the twin is trained on per-neuron standardized
        responses and whether it takes the scans' behaviour as inputs (`twin.training.build_model`);
        returns its key."""
        p = get_preset(preset)
        if int(glm_alphas) < 1:
            raise ValueError(f"glm_alphas must be >= 1, got {glm_alphas!r}")
        canvas = p.canvas if canvas is None else canvas
        if len(canvas) != 2 or any(int(c) != c or c < 1 for c in canvas):
            raise ValueError(f"model canvas must be [H, W] (two positive ints), got {canvas!r}")
        train = {**p.train.to_dict(), **train_overrides}
        unknown = set(train) - set(TrainConfig().to_dict())
        if unknown:
            raise KeyError(f"unknown training parameters {sorted(unknown)}")
        TrainConfig(**train)  # a bad value (e.g. the schedule) is refused before any insert
        if train["precision"] == "auto":  # only when set, so that stored models keep their hashes
            del train["precision"]
        config = {
            "core": _jsonable(p.core),
            "readout": p.readout,
            "downsample": p.downsample,
            "canvas": [int(c) for c in canvas],
            "train": train,
        }
        if p.output != "elu1":  # only when set, so that stored ELU+1 models keep their hashes
            config["output"] = p.output
        if int(glm_alphas) != len(DT_ALPHAS):  # likewise: DT's grid is the default
            config["glm_alphas"] = int(glm_alphas)
        for name, value in (
            ("standardize_responses", standardize_responses),
            ("behavior", behavior),
        ):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")
            if not value:  # likewise: on by default
                config[name] = False
        key = {"model_hash": config_hash(config)}
        cls.insert1(dict(key, preset=preset, config=config), skip_duplicates=True)
        return key


@schema
class SeedSet(dj.Manual):
    definition = """
    # ModelConfigs that differ only in their training seed ([model] n_seeds), for reliability
    seedset_hash    : char(32)      # md5 of the members' model_hashes, in seed order
    ---
    n_seeds         : int32
    """

    class Member(dj.Part):
        definition = """
        -> master
        -> ModelConfig
        ---
        seed            : int32
        """

    @classmethod
    def add(cls, model_hashes: list[str], seeds: list[int]) -> dict:
        """Insert the set of ModelConfigs (one per seed, same order); returns its key."""
        if len(model_hashes) != len(seeds) or len(set(seeds)) != len(seeds) or not seeds:
            raise ValueError(f"one distinct seed per model_hash, got {seeds} for {model_hashes}")
        key = {"seedset_hash": config_hash({"model_hashes": list(model_hashes)})}
        with cls.connection.transaction:  # skip_duplicates: safe when workers add it at once
            cls.insert1(dict(key, n_seeds=len(seeds)), skip_duplicates=True)
            cls.Member.insert(
                (dict(key, model_hash=h, seed=int(s)) for h, s in zip(model_hashes, seeds)),
                skip_duplicates=True,
            )
        return key


def _jsonable(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@schema
class Dataset(dj.Manual):
    definition = """
    # the scans one model is fitted to (one shared core, a readout per scan)
    dataset_hash    : char(32)      # md5 of the sorted scan keys
    ---
    n_scans         : int32
    """

    class Member(dj.Part):
        definition = """
        -> master
        -> recording.Scan
        """

    @classmethod
    def add(cls, scan_keys: list[str] | None = None) -> dict:
        """Insert the set of scans (default: every imported scan); returns its key."""
        scans = sorted(scan_keys or recording.Scan().to_arrays("scan_key"))
        if not scans:
            raise ValueError(
                f"no scans: {recording.Scan.full_table_name} is empty; import recordings first"
            )
        missing = [s for s in scans if not recording.Scan & {"scan_key": s}]
        if missing:
            raise KeyError(f"scans {missing} are not in {recording.Scan.full_table_name}")
        key = {"dataset_hash": config_hash({"scans": scans})}
        with cls.connection.transaction:  # skip_duplicates: safe when workers add it at once
            cls.insert1(dict(key, n_scans=len(scans)), skip_duplicates=True)
            cls.Member.insert((dict(key, scan_key=s) for s in scans), skip_duplicates=True)
        return key


def load_scans(dataset_key: dict, canvas) -> list[ScanData]:
    """Every member scan as a ScanData (name = scan key), images area-averaged onto the model
    canvas (H, W) (`twin.data.to_canvas`; the stored images stay as they are)."""
    keys = (Dataset.Member & dataset_key).to_arrays("scan_key", order_by="scan_key")
    check_canvas(keys, canvas)
    return [ScanData(name=k, **_model_fields(recording.load_scan(k, canvas))) for k in keys]


def check_canvas(scan_keys, canvas) -> None:
    """ValueError naming the scan and its source file when its stored images cannot be
    area-averaged onto the canvas (H, W) (checked from the Scan rows, before any image is read)."""
    for key in scan_keys:
        height, width, source = (recording.Scan & {"scan_key": key}).fetch1(
            "image_height", "image_width", "source"
        )
        to_canvas(np.zeros((0, 1, height, width), np.float32), canvas, f"scan {key!r} ({source})")


def _model_fields(arrays: dict) -> dict:
    fields = ("images", "responses", "tiers", "image_ids", "behavior", "pupil_center")
    return {f: arrays.get(f) for f in fields}


@schema
class TrainedModel(dj.Computed):
    definition = """
    # a twin fitted to a dataset, with its weights
    -> Dataset
    -> ModelConfig
    ---
    architecture    : json          # Twin.config: rebuilds the model without data
    weights         : <blob>        # state_dict as {name: array}
    device          : varchar(32)   # where it was trained, and the precision of its steps
    epochs          : int32
    train_seconds   : float32
    best_val_corr   : float32       # mean single-trial validation correlation
    test_corr       : float32       # median over neurons
    feve            : float32       # median over neurons
    """

    class Unit(dj.Part):
        definition = """
        -> master
        -> recording.Scan.Neuron
        ---
        test_corr       : float32   # single-trial test correlation
        corr_to_avg     : float32   # correlation to the mean over repeats
        oracle_corr     : float32   # leave-one-out over repeats
        feve            : float32   # fraction of explainable variance explained
        rf_x            : float32   # readout RF centre, canvas pixels (column)
        rf_y            : float32   # (row)
        response_sd = null : float32  # twin unit in recorded units (train s.d.; null: imported)
        """

    @property
    def key_source(self):
        """Every dataset x ModelConfig to train: imported models (ExternalModel) are not."""
        return Dataset.proj() * (ModelConfig.proj() - ExternalModel.proj())

    def make(self, key):
        config = (ModelConfig & key).fetch1("config")
        scans = load_scans(key, config["canvas"])
        train = TrainConfig(**config["train"])
        model = build_model(config, scans, seed=train.seed)
        t0 = time.perf_counter()
        history = fit(model, scans, train, progress=show_progress())
        seconds = time.perf_counter() - t0
        units, metrics = _unit_rows(key, model, scans)
        self.insert1(
            dict(
                key,
                architecture=model.config,
                weights={k: v.detach().cpu().numpy() for k, v in model.state_dict().items()},
                device=f"{history['device']}, {history['precision']}",
                epochs=len(history["epoch"]),
                train_seconds=seconds,
                best_val_corr=history["best_val_corr"],
                test_corr=float(np.nanmedian(metrics["test_correlation"])),
                feve=float(np.nanmedian(metrics["feve"])),
            )
        )
        self.Unit.insert(units)


def _unit_rows(key: dict, model: Twin, scans: list[ScanData]) -> tuple[list[dict], dict]:
    """Per-neuron metric rows for the Unit part, and the metrics concatenated over scans."""
    rows, allm = [], []
    for scan in scans:
        m = evaluate(model, scan)
        unit_ids = (recording.Scan.Neuron & {"scan_key": scan.name}).to_arrays(
            "unit_id", order_by="neuron_idx"
        )
        rf = model.rf_positions(scan.name)
        scale = model.response_scale(scan.name).cpu().numpy()
        for i, unit in enumerate(unit_ids):
            rows.append(
                dict(
                    key,
                    scan_key=scan.name,
                    unit_id=int(unit),
                    test_corr=m["test_correlation"][i],
                    corr_to_avg=m["correlation_to_average"][i],
                    oracle_corr=m["oracle_correlation"][i],
                    feve=m["feve"][i],
                    rf_x=rf[i, 0],
                    rf_y=rf[i, 1],
                    response_sd=scale[i],
                )
            )
        allm.append(m)
    return rows, {k: np.concatenate([m[k] for m in allm]) for k in allm[0]}


@schema
class ExternalModel(dj.Manual):
    definition = """
    # a model trained elsewhere (v1twin import model): its ModelConfig, file and bar codes
    -> ModelConfig
    ---
    source          : varchar(255)  # the file it was imported from
    format          : varchar(16)   # insilico.external.FORMATS
    barcode_order = null : varchar(16)  # "rotation-major" when its readout gives bar codes
    barcode_note    : varchar(255)  # why it has no bar codes (clustering skips it), or ""
    """

    @classmethod
    def add(
        cls, path, module, spec: dict, weights: dict, data_keys: dict, canvas, barcodes: str
    ) -> dict:
        """Insert a model read by ``insilico.external.read_module`` as a TrainedModel of the
        dataset of the scans ``data_keys`` ({scan_key: the module's data_key}) on the canvas
        (H, W); ``barcodes``: "" if its readout gives bar codes, else why not. Checks first
        (scans, canvas, neuron counts, RF positions: a ValueError naming file and scan) and
        evaluates it on each scan's test tier; then writes every row in one transaction.
        Returns the TrainedModel key; a model already imported (same file bytes, scans and
        canvas) is left as it is."""
        canvas = [int(c) for c in canvas]
        spec = dict(spec, data_keys=dict(sorted(data_keys.items())), image_shape=canvas)
        digest = hashlib.md5(b"".join(np.asarray(v).tobytes() for v in weights.values()))
        config = {"external": dict(spec, md5=digest.hexdigest()), "canvas": canvas}
        key = {"model_hash": config_hash(config)}
        scans = sorted(data_keys)
        missing = [s for s in scans if not recording.Scan & {"scan_key": s}]
        if missing:
            known = sorted(str(s) for s in recording.Scan().to_arrays("scan_key"))
            raise ValueError(
                f"{path}: scans {missing} are not in {recording.Scan.full_table_name}; "
                f"imported scans: {known}"
            )
        check_canvas(scans, canvas)
        data = [
            ScanData(name=s, **_model_fields(recording.load_scan(s))).on_canvas(canvas)
            for s in scans
        ]
        units, metrics = _external_units(path, module, spec, data)
        dataset = {"dataset_hash": config_hash({"scans": scans})}
        if TrainedModel & dataset & key:
            return dict(dataset, **key)
        row = dict(
            dataset,
            **key,
            architecture={"external": spec},
            weights=weights,
            device="cpu",
            epochs=0,
            train_seconds=0.0,
            **metrics,
        )
        with cls.connection.transaction:
            Dataset.insert1(dict(dataset, n_scans=len(scans)), skip_duplicates=True)
            Dataset.Member.insert((dict(dataset, scan_key=s) for s in scans), skip_duplicates=True)
            ModelConfig.insert1(dict(key, preset="external", config=config), skip_duplicates=True)
            cls.insert1(
                dict(
                    key,
                    source=str(path)[-255:],
                    format=spec["format"],
                    barcode_order=None if barcodes else "rotation-major",
                    barcode_note=barcodes[:255],
                ),
                skip_duplicates=True,
            )
            TrainedModel.insert1(row, allow_direct_insert=True)
            TrainedModel.Unit.insert(
                (dict(dataset, **key, **u) for u in units), allow_direct_insert=True
            )
        return dict(dataset, **key)


def external_response_model(path, module, spec, scan: ScanData):
    """The ExternalResponseModel of one scan (its data_key in ``spec``), with clear errors
    naming the file and the scan where the module does not take the scan's canvas, returns
    another neuron count, or has no readable RF positions."""
    data_key, canvas = spec["data_keys"][scan.name], tuple(spec["image_shape"])
    where = f"{path} (data_key {data_key!r}) on scan {scan.name!r}"
    try:
        readout = external.readout_of(module, data_key)
    except (KeyError, ValueError) as err:
        raise ValueError(f"{where}: {err.args[0]}") from err
    try:
        with torch.no_grad():
            _check_feature_map(module, readout, canvas)
            out = module.eval()(torch.zeros(2, 1, *canvas), data_key=data_key)
    except Exception as err:  # noqa: BLE001 - whatever the module raises on this image shape
        raise ValueError(
            f"{where}: the model does not take the scan's images on the canvas {list(canvas)} "
            f"(B, 1, H, W; --canvas H W): {type(err).__name__}: {str(err).splitlines()[0]}"
        ) from err
    if tuple(out.shape) != (2, scan.n_neurons):
        raise ValueError(
            f"{where}: the model returns {tuple(out.shape)[1:]} neurons for a batch of 2; the "
            f"scan has {scan.n_neurons}"
        )
    try:
        return external.ExternalResponseModel(module, data_key, canvas)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err


def _check_feature_map(module, readout, canvas) -> None:
    """ValueError when the core's feature map on the canvas is not the one the readout was
    built for (neuralpredictors' FullGaussian2d only warns, then reads the wrong positions)."""
    core = getattr(module, "core", None)
    expected = getattr(readout, "in_shape", None)
    if core is None or expected is None:
        return
    got = tuple(core(torch.zeros(1, 1, *canvas)).shape[1:])
    if got != tuple(expected):
        raise ValueError(
            f"its core gives a {got} feature map, its readout expects {tuple(expected)}: it was "
            "trained on images of another size"
        )


def _external_units(path, module, spec, scans: list[ScanData]) -> tuple[list[dict], dict]:
    """Unit rows (no key) and the TrainedModel metric columns of an external model; its inputs
    are each scan's images standardized by the train tier's pixel mean and std."""
    rows, allm, val = [], [], []
    for scan in scans:
        rm = external_response_model(path, module, spec, scan)
        train = scan.select("train").images
        mean, std = float(train.mean()), float(train.std())

        def predict(images, rm=rm, mean=mean, std=std):
            x = torch.as_tensor((images - mean) / std, dtype=torch.float32)
            with torch.no_grad():
                return torch.cat([rm(x[i : i + 256]) for i in range(0, len(x), 256)]).numpy()

        test, valid = scan.select("test"), scan.select("validation")
        if len(test.responses) == 0:
            raise ValueError(f"scan {scan.name!r} has no test-tier trials")
        m = prediction_scores(predict(test.images), test)
        m["oracle_correlation"] = oracle_correlation(test.responses, test.image_ids)
        if len(valid.responses):
            val.append(correlation(predict(valid.images), valid.responses))
        unit_ids = (recording.Scan.Neuron & {"scan_key": scan.name}).to_arrays(
            "unit_id", order_by="neuron_idx"
        )
        for i, (unit, rf) in enumerate(zip(unit_ids, rm.rf_positions)):
            rows.append(
                dict(
                    scan_key=scan.name,
                    unit_id=int(unit),
                    test_corr=m["test_correlation"][i],
                    corr_to_avg=m["correlation_to_average"][i],
                    oracle_corr=m["oracle_correlation"][i],
                    feve=m["feve"][i],
                    rf_x=rf[0],
                    rf_y=rf[1],
                )
            )
        allm.append(m)
    metrics = {k: np.concatenate([m[k] for m in allm]) for k in allm[0]}
    return rows, dict(
        best_val_corr=float(np.nanmean(np.concatenate(val))) if val else float("nan"),
        test_corr=float(np.nanmedian(metrics["test_correlation"])),
        feve=float(np.nanmedian(metrics["feve"])),
    )


def is_external(key: dict) -> bool:
    """Whether the key's model was imported (ExternalModel) rather than trained here."""
    return bool(ExternalModel & {"model_hash": key["model_hash"]})


def load_external(key: dict):
    """(module (eval mode, CPU), spec) of an imported model: spec["data_keys"] maps each
    scan_key to the module's data_key, spec["image_shape"] is its canvas (H, W)."""
    row = TrainedModel & key
    architecture, weights = row.fetch1("architecture", "weights")
    spec = architecture["external"]
    pk = {k: v for k, v in key.items() if k in TrainedModel.primary_key}
    where = f"{TrainedModel.full_table_name} {pk} (imported from {spec.get('format')} file)"
    return external.rebuild(spec, weights, where), spec


def load_model(key: dict, device: str | None = None) -> Twin:
    """Rebuild a stored twin (eval mode) on `device` (default: cuda if available).

    A stored model that does not load (weights that do not decode or do not fit, an architecture
    that does not build) raises a ValueError naming the row, which a worker records in the job
    table before it goes on to its other keys.
    """
    row = TrainedModel & key
    try:
        architecture, weights = row.fetch1("architecture", "weights")
        model = Twin.from_config(architecture)
        model.load_state_dict({k: torch.tensor(np.array(v)) for k, v in weights.items()})
    except Exception as err:  # noqa: BLE001 - any failure here means the stored row is corrupt
        pk = {k: v for k, v in key.items() if k in TrainedModel.primary_key}
        raise ValueError(
            f"{TrainedModel.full_table_name} {pk}: the stored model does not load "
            f"({type(err).__name__}: {err}); delete the row and populate it again"
        ) from err
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval()


@schema
class GLM(dj.Computed):
    definition = """
    # per-neuron Poisson GLM on the pixels (log link, L2 chosen by cross-validation)
    -> recording.Scan
    -> ModelConfig
    ---
    downsample      : int32         # input pooling: the twin's (the ModelConfig's) downsample
    """

    class Unit(dj.Part):
        definition = """
        -> master
        -> recording.Scan.Neuron
        ---
        test_corr       : float32   # single-trial test correlation
        alpha           : float32   # L2 penalty chosen by cross-validation (per-trial loss)
        """

    def make(self, key):
        config = (ModelConfig & key).fetch1("config")
        # the images the twin sees, at its pooling
        arrays = recording.load_scan(key["scan_key"], config["canvas"])
        scan = ScanData(name=key["scan_key"], **_model_fields(arrays))
        glm = PoissonGLM(
            downsample=int(config.get("downsample", 1)), alphas=glm_alphas(config)
        ).fit(scan)
        test = scan.select("test")
        corr = single_trial_correlation(glm.predict(test.images), test.responses)
        self.insert1(dict(key, downsample=glm.downsample))
        self.Unit.insert(
            dict(key, unit_id=int(u), test_corr=c, alpha=a)
            for u, c, a in zip(arrays["unit_ids"], corr, glm.alpha_)
        )


def glm_alphas(config: dict) -> tuple:
    """The GLM's L2 strengths for a ModelConfig's config: DT's 48, or ``glm_alphas`` of them
    log-spaced over the same range [0.1, 5]."""
    n = int(config.get("glm_alphas", len(DT_ALPHAS)))
    return DT_ALPHAS if n == len(DT_ALPHAS) else tuple(np.geomspace(DT_ALPHAS[0], DT_ALPHAS[-1], n))
