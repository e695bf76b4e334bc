"""In-silico experiments on a trained twin, per neuron and per cluster.

OptimalGabor, OptimalDoG and MEI per neuron; the tuning batteries (orientation, phase,
size-contrast, plaids, Gabor vs DoG vs MEI) from each neuron's optimal Gabor; the non-linearity
index against the GLM; ClusterOptimalGabor and ClusterMEI per cluster, and the orientation, phase,
size-contrast and plaid battery again at the cluster's optimal Gabor (``Cluster<Table>``, DT's
per-cluster battery: shared size, sf, contrast and phase at each neuron's own RF and
orientation). Curves are stored per
neuron as ``<array>`` values with their coordinates in the master row; indices are columns, so
population statistics are queries.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from tqdm.auto import tqdm

import insilico
from insilico import experiments, search, twin_adapter, units
from insilico.external import ExternalResponseModel
from insilico.indices import nonlinearity_index
from insilico.mei import mei
from insilico.twin_adapter import TwinResponseModel

from . import clustering, codecs, dj, model, new_schema, recording, show_progress  # noqa: F401  (codecs registers <array>)
from .model import config_hash

schema = new_schema()

MEI_CHUNK = 512  # neurons per MEI batch (MEI.make's chunk_size): bounds peak memory


@schema
class InSilicoParams(dj.Lookup):
    definition = """
    # stimulus grids and experiment settings, deduplicated by hash
    insilico_hash   : char(32)
    ---
    params          : json          # grids, re-scoring, MEI and energy settings (see add)
    """

    @classmethod
    def add(
        cls,
        grid: str = "cpu",
        refine: int = twin_adapter.REFINE,
        border_refine: int = twin_adapter.BORDER_REFINE,
        mei_steps: int = 100,
        mei_norm: float = insilico.mei.NORM_DEG,
        energies=experiments.ENERGIES_DEG,
        pixels_per_degree: float = 0.0,
    ) -> dict:
        """Sizes, norms and grids are in degrees of visual angle (``insilico.units``);
        pixels_per_degree: of the stored images (0: the Sensorium screen's, where it applies).
        refine / border_refine: candidates of the fast search re-scored by the direct path per
        interior / border neuron (border_refine -1: border neurons search the whole grid
        directly, as parameter sets stored without the key do)."""
        if grid not in ("cpu", "paper"):
            raise ValueError(f"grid must be 'cpu' or 'paper', got {grid!r}")
        if int(refine) < 0:
            raise ValueError(
                f"refine must be >= 0 (candidates re-scored per neuron), got {refine!r}"
            )
        if int(border_refine) < -1:
            raise ValueError(
                f"[insilico] border_refine must be >= 0, or -1 (whole grid), got {border_refine!r}"
            )
        if float(pixels_per_degree) < 0:
            raise ValueError(
                f"[insilico] pixels_per_degree must be >= 0 (0: default), got {pixels_per_degree}"
            )
        params = dict(
            grid=grid,
            refine=int(refine),
            border_refine=int(border_refine),
            mei_steps=int(mei_steps),
            mei_norm=float(mei_norm),
            energies=[float(e) for e in energies],
            pixels_per_degree=float(pixels_per_degree),
        )
        key = {"insilico_hash": config_hash(params)}
        cls.insert1(dict(key, params=params), skip_duplicates=True)
        return key


def _params(key) -> dict:
    return (InSilicoParams & key).fetch1("params")


def _refine(params: dict) -> dict:
    """``refine`` and ``border_refine`` of twin_adapter's searches: candidates re-scored by the
    direct path (0 and the whole grid for parameter sets stored before each existed)."""
    border = int(params.get("border_refine", -1))
    return dict(refine=int(params.get("refine", 0)), border_refine=None if border < 0 else border)


def _grids(params: dict, ppd: float) -> tuple[search.GaborGrid, search.DoGGrid]:
    """The named grids (defined in degrees) on a canvas of ``ppd`` pixels per degree."""
    if params["grid"] == "cpu":
        return search.GaborGrid.cpu(ppd), search.DoGGrid.cpu(ppd)
    return search.GaborGrid.paper(ppd), search.DoGGrid.paper(ppd)


def canvas_pixels_per_degree(key: dict, canvas) -> float:
    """Pixels per degree of the twin's canvas (H, W), from InSilicoParams' pixels_per_degree of
    the stored images (or the Sensorium default) and each scan's stored image size; a
    ValueError naming the scan and its file where none applies or the scans disagree."""
    stored = _params(key)["pixels_per_degree"]
    rows = (recording.Scan * model.Dataset.Member & key).to_dicts(order_by="scan_key")
    ppd = {
        r["scan_key"]: units.canvas_pixels_per_degree(
            stored,
            (r["image_height"], r["image_width"]),
            canvas,
            f"scan {r['scan_key']!r} ({r['source']})",
        )
        for r in rows
    }
    if not ppd:
        raise ValueError(f"{key}: the trained model's dataset has no scans")
    if max(ppd.values()) - min(ppd.values()) > 1e-6 * max(ppd.values()):
        raise ValueError(
            f"scans {sorted(ppd)} give different pixels per degree on the {canvas} canvas "
            f"({ppd}): images of different sizes need a per-scan pixels per degree"
        )
    return next(iter(ppd.values()))


def scan_models(key: dict):
    """(scan_key, unit_ids (N,), ResponseModel) for every scan of the trained model: a
    TwinResponseModel (fast path) for a twin, an ExternalResponseModel (direct path only) for an
    imported model (model.ExternalModel)."""
    if model.is_external(key):
        module, spec = model.load_external(key)
        ppd = canvas_pixels_per_degree(key, spec["image_shape"])
        models = {
            scan: ExternalResponseModel(
                module, data_key, spec["image_shape"], pixels_per_degree=ppd
            )
            for scan, data_key in spec["data_keys"].items()
        }
    else:
        twin = model.load_model(key)
        ppd = canvas_pixels_per_degree(key, twin.image_shape)
        models = {s: TwinResponseModel(twin, s, pixels_per_degree=ppd) for s in twin.readouts}
    for scan in sorted(models):
        unit_ids = (recording.Scan.Neuron & {"scan_key": scan}).to_arrays(
            "unit_id", order_by="neuron_idx"
        )
        yield scan, unit_ids, models[scan]


def _rows(key, scan, unit_ids, columns: dict) -> list[dict]:
    """Part rows: one per neuron, columns given as arrays (N,) or (N, ...)."""
    return [
        dict(key, scan_key=scan, unit_id=int(u), **{c: v[i] for c, v in columns.items()})
        for i, u in enumerate(unit_ids)
    ]


def _columns(ds, keys) -> dict:
    return {k: np.asarray(ds[k].values, np.float32) for k in keys}


@schema
class OptimalGabor(dj.Computed):
    definition = """
    # the Gabor (DT Eq. 1-2) that drives each neuron most, by grid search
    -> model.TrainedModel
    -> InSilicoParams
    ---
    pixels_per_degree : float32     # of the twin's canvas (insilico.units)
    """

    class Unit(dj.Part):
        definition = """
        -> master
        -> recording.Scan.Neuron
        ---
        x               : float32   # centre, canvas pixels (column)
        y               : float32   # centre, canvas pixels (row)
        size            : float32   # sigma of DT Eq. 1, pixels
        sf              : float32   # cycles / pixel
        size_deg        : float32   # sigma of DT Eq. 1, degrees of visual angle
        sf_cpd          : float32   # cycles / degree
        contrast        : float32   # a of DT Eq. 1, standardized units
        orientation     : float32   # radians, DT Eq. 2
        phase           : float32   # radians
        response        : float32   # predicted rate
        """

    def make(self, key):
        keys = search.GABOR_KEYS + ("size_deg", "sf_cpd", "response")
        rows, ppd = _search_rows(key, twin_adapter.optimal_gabor, 0, keys)
        self.insert1(dict(key, pixels_per_degree=ppd))
        self.Unit.insert(rows)


def _search_rows(key: dict, find, which: int, keys) -> tuple[list[dict], float]:
    """Part rows of every scan's optimal stimuli, found by ``find`` (twin_adapter.optimal_gabor or
    optimal_dog) on the named grid ``which`` (0: Gabor, 1: DoG, see ``_grids``), with ``keys``
    (sizes also in degrees); and the canvas pixels per degree."""
    params = _params(key)
    rows = []
    for scan, unit_ids, rm in scan_models(key):
        grid = _grids(params, rm.pixels_per_degree)[which]
        best = find(rm, grid, **_refine(params), progress=show_progress())
        best = units.in_degrees(best, rm.pixels_per_degree)
        rows += _rows(key, scan, unit_ids, _columns(best, keys))
    return rows, rm.pixels_per_degree


def _optimal_params(part, keys, key: dict, scan: str) -> dict[str, np.ndarray]:
    """Optimal-stimulus parameters of one scan's neurons, (N,) each, in neuron_idx order."""
    rows = (part * recording.Scan.Neuron & key & {"scan_key": scan}).to_dicts(order_by="neuron_idx")
    return {k: np.array([r[k] for r in rows], np.float32) for k in keys}


def gabor_params(key: dict, scan: str) -> dict[str, np.ndarray]:
    return _optimal_params(OptimalGabor.Unit, search.GABOR_KEYS, key, scan)


@schema
class OptimalDoG(dj.Computed):
    definition = """
    # the difference of Gaussians (DT Eq. 9-10) that drives each neuron most
    -> model.TrainedModel
    -> InSilicoParams
    """

    class Unit(dj.Part):
        definition = """
        -> master
        -> recording.Scan.Neuron
        ---
        x               : float32
        y               : float32
        sigma_center    : float32   # pixels
        sigma_surround  : float32   # pixels
        sigma_center_deg    : float32   # degrees of visual angle
        sigma_surround_deg  : float32   # degrees of visual angle
        a_center        : float32   # signed (negative: OFF centre)
        a_surround      : float32
        response        : float32
        """

    def make(self, key):
        keys = search.DOG_KEYS + ("sigma_center_deg", "sigma_surround_deg", "response")
        rows, _ = _search_rows(key, twin_adapter.optimal_dog, 1, keys)
        self.insert1(key)
        self.Unit.insert(rows)


def dog_params(key: dict, scan: str) -> dict[str, np.ndarray]:
    return _optimal_params(OptimalDoG.Unit, search.DOG_KEYS, key, scan)


#: Gaussian blur of the MEI gradient, degrees (1 px of the 36 x 64 canvas, insilico.units).
MEI_SMOOTH_DEG = 3.3


@schema
class MEI(dj.Computed):
    definition = """
    # most exciting input per neuron: gradient ascent at a fixed L2 norm, chunks of neurons
    -> model.TrainedModel
    -> InSilicoParams
    ---
    norm            : float32       # L2 norm of every MEI on the canvas, standardized units
    """

    class Unit(dj.Part):
        definition = """
        -> master
        -> recording.Scan.Neuron
        ---
        image           : <array>   # (H, W) float32, standardized units
        response        : float32   # predicted rate
        """

    def make(self, key, chunk_size: int = MEI_CHUNK):
        p = _params(key)
        rows = []
        for scan, unit_ids, rm in scan_models(key):
            norm = p["mei_norm"] * rm.pixels_per_degree
            images, responses = scan_meis(rm, norm, p["mei_steps"], chunk_size)
            rows += _rows(key, scan, unit_ids, {"image": images, "response": responses})
        self.insert1(dict(key, norm=norm))
        self.Unit.insert(rows)


def scan_meis(rm: TwinResponseModel, norm: float, steps: int, chunk_size: int = MEI_CHUNK):
    """MEIs of one scan's neurons at L2 ``norm`` (canvas pixels, standardized units), ``steps``
    of gradient ascent, ``chunk_size`` neurons per batch.

    Peak memory grows with the chunk (the images, gradients and activations of one batch), not
    with the scan's N. Every chunk starts from its slice of one white-noise init (seed 0), and
    each image ascends its own neuron's gradient, so the result does not depend on chunk_size.

    Returns images (N, H, W) float32 in standardized units and responses (N,) float32.
    """
    n, (height, width) = len(rm.rf_positions), rm.image_shape
    init = torch.randn(n, 1, height, width, generator=torch.Generator().manual_seed(0))
    images, responses = [], []
    starts = range(0, n, chunk_size)
    for start in tqdm(starts, desc="MEI chunks", disable=not show_progress() or len(starts) < 2):
        chunk = np.arange(start, min(start + chunk_size, n))
        result = mei(
            rm.subset(chunk),
            init=init[chunk],
            norm=norm,
            steps=steps,
            smooth_sigma=MEI_SMOOTH_DEG * rm.pixels_per_degree,
            progress=show_progress(),
        )
        images.append(result.images[:, 0].detach().cpu().numpy().astype(np.float32))
        responses.append(np.asarray(result.responses, np.float32))
    return np.concatenate(images), np.concatenate(responses)


def mei_images(key: dict, scan: str) -> np.ndarray:
    """(N, 1, H, W) MEIs of one scan's neurons in neuron_idx order."""
    images = (MEI.Unit * recording.Scan.Neuron & key & {"scan_key": scan}).to_arrays(
        "image", order_by="neuron_idx"
    )
    return np.stack(images)[:, None]


class _Battery:
    """Shared ``make`` of the tuning tables: run one experiment per scan, store curves + indices.

    A subclass defines ``run(rm, gabor) -> DataArray (neuron, ...)`` (the experiment at the
    per-neuron Gabor parameters ``gabor``, (N,) each; or overrides ``_curve``), ``coords``
    (master attribute -> the curve's dimension holding its coordinates) and ``indices`` (part
    attribute -> function of the curve giving one value per neuron). The Gabors are each
    neuron's own optimal Gabor; the ``Cluster...`` tables (:class:`_AtClusterGabor`) take the
    cluster's instead.
    """

    def _gabor(self, key, scan) -> dict[str, np.ndarray]:
        return gabor_params(key, scan)

    def _curve(self, key, scan, rm):
        return self.run(rm, self._gabor(key, scan))

    def make(self, key):
        rows, coords = [], None
        for scan, unit_ids, rm in scan_models(key):
            curve = self._curve(key, scan, rm)
            coords = {
                name: np.asarray(curve[dim].values, np.float32) for name, dim in self.coords.items()
            }
            columns = {"curve": np.asarray(curve.values, np.float32)}
            columns.update(
                {name: np.asarray(f(curve), np.float32) for name, f in self.indices.items()}
            )
            rows += _rows(key, scan, unit_ids, columns)
        self.insert1(dict(key, **coords))
        self.Unit.insert(rows)


class _AtClusterGabor(_Battery):
    """A tuning table at the cluster's optimal Gabor (ClusterOptimalGabor.Unit: the shared size,
    sf, contrast and phase, at each neuron's own RF position and orientation, as DT runs its
    battery per cluster)."""

    def _gabor(self, key, scan) -> dict[str, np.ndarray]:
        return _optimal_params(ClusterOptimalGabor.Unit, search.GABOR_KEYS, key, scan)


def _at_cluster_gabor(definition: str) -> str:
    """The definition of a per-neuron tuning table (or its part), keyed by the cluster's optimal
    Gabor instead of the neuron's: the same columns, meaning the same, at the other stimulus."""
    out = definition.replace("-> OptimalGabor.Unit", "-> ClusterOptimalGabor.Unit")
    out = re.sub(r"-> OptimalGabor\n", "-> ClusterOptimalGabor\n", out)
    return re.sub(r"^(\s*)# ", r"\1# at the cluster's optimal Gabor: ", out, count=1, flags=re.M)


@schema
class OrientationTuning(_Battery, dj.Computed):
    definition = """
    # responses to the optimal Gabor at every orientation; F2/F0 (DT Eq. 11)
    -> OptimalGabor
    ---
    orientations    : <array>       # (K,) radians
    """

    class Unit(dj.Part):
        definition = """
        -> master
        -> OptimalGabor.Unit
        ---
        curve               : <array>   # (K,) predicted rates
        orientation_index   : float32   # F2/F0 (DT Eq. 11) = 1 - circular variance
        """

    coords = {"orientations": "orientation"}
    indices = {"orientation_index": lambda c: insilico.indices.orientation_index(c)}

    @staticmethod
    def run(rm, gabor):
        return twin_adapter.per_neuron_experiment(experiments.orientation_tuning, rm, gabor, 16)


@schema
class PhaseTuning(_Battery, dj.Computed):
    definition = """
    # responses to the optimal Gabor at every phase; F1/F0 (DT Eq. 11 literal, and textbook)
    -> OptimalGabor
    ---
    phases          : <array>       # (K,) radians
    """

    class Unit(dj.Part):
        definition = """
        -> master
        -> OptimalGabor.Unit
        ---
        curve           : <array>   # (K,) predicted rates
        phase_index     : float32   # |F1|/F0 as DT Eq. 11 writes it (pi/4: half-rectified)
        phase_f1f0      : float32   # 2|F1|/F0, textbook (pi/2: half-rectified; > 1: simple)
        """

    coords = {"phases": "phase"}
    indices = {
        "phase_index": lambda c: insilico.indices.phase_index(c),
        "phase_f1f0": lambda c: insilico.indices.phase_f1f0(c),
    }

    @staticmethod
    def run(rm, gabor):
        return twin_adapter.per_neuron_experiment(experiments.phase_tuning, rm, gabor, 16)


@schema
class SizeContrastTuning(_Battery, dj.Computed):
    definition = """
    # optimal Gabor at every size x contrast; suppression and contrast indices (DT Eq. 12-13)
    -> OptimalGabor
    ---
    contrasts       : <array>       # (C,) a of DT Eq. 1
    sizes           : <array>       # (S,) pixels
    """

    class Unit(dj.Part):
        definition = """
        -> master
        -> OptimalGabor.Unit
        ---
        curve               : <array>   # (C, S) predicted rates
        suppression_index   : float32
        contrast_index      : float32
        """

    coords = {"contrasts": "contrast", "sizes": "size"}
    indices = {
        "suppression_index": lambda c: insilico.indices.suppression_index(c),
        "contrast_index": lambda c: insilico.indices.contrast_index(c),
    }

    @staticmethod
    def run(rm, gabor):
        return twin_adapter.size_contrast_tuning(rm, gabor)


@schema
class PlaidTuning(_Battery, dj.Computed):
    definition = """
    # optimal Gabor + orthogonal Gabor at every pair of contrasts; plaid index (DT Eq. 14)
    -> OptimalGabor
    ---
    optimal_contrasts       : <array>   # (P,)
    orthogonal_contrasts    : <array>   # (Q,)
    """

    class Unit(dj.Part):
        definition = """
        -> master
        -> OptimalGabor.Unit
        ---
        curve           : <array>   # (P, Q) predicted rates
        plaid_index     : float32   # cross-orientation inhibition
        """

    coords = {
        "optimal_contrasts": "optimal_contrast",
        "orthogonal_contrasts": "orthogonal_contrast",
    }
    indices = {"plaid_index": lambda c: insilico.indices.plaid_index(c)}

    @staticmethod
    def run(rm, gabor):
        return twin_adapter.per_neuron_experiment(experiments.plaid_tuning, rm, gabor)


@schema
class StimulusComparison(_Battery, dj.Computed):
    definition = """
    # optimal Gabor, DoG and MEI at matched energies (L2 norms); DT Eq. 15-17
    -> OptimalGabor
    -> OptimalDoG
    -> MEI
    ---
    energies        : <array>       # (E,) L2 norms on the canvas (InSilicoParams' x ppd)
    """

    class Unit(dj.Part):
        definition = """
        -> master
        -> OptimalGabor.Unit
        ---
        curve           : <array>   # (3, E) predicted rates; rows: gabor, dog, mei
        gabor_vs_dog    : float32
        gabor_vs_mei    : float32
        dog_vs_mei      : float32
        """

    coords = {"energies": "energy"}
    indices = {
        "gabor_vs_dog": lambda c: insilico.indices.stimulus_ratio(
            c.sel(stimulus="gabor"), c.sel(stimulus="dog")
        ),
        "gabor_vs_mei": lambda c: insilico.indices.stimulus_ratio(
            c.sel(stimulus="gabor"), c.sel(stimulus="mei")
        ),
        "dog_vs_mei": lambda c: insilico.indices.stimulus_ratio(
            c.sel(stimulus="dog"), c.sel(stimulus="mei")
        ),
    }

    def _curve(self, key, scan, rm):
        energies = np.asarray(_params(key)["energies"]) * rm.pixels_per_degree
        return experiments.stimulus_comparison(
            rm, gabor_params(key, scan), dog_params(key, scan), mei_images(key, scan), energies
        )


@schema
class NonlinearityIndex(dj.Computed):
    definition = """
    # CNN test correlation / GLM test correlation (DT Eq. 18)
    -> model.TrainedModel
    """

    class Unit(dj.Part):
        definition = """
        -> master
        -> model.TrainedModel.Unit
        ---
        cnn_corr            : float32
        glm_corr            : float32
        nonlinearity_index  : float32
        """

    @property
    def key_source(self):
        """Trained models all of whose scans have a GLM fitted at the twin's input resolution."""
        missing = (model.Dataset.Member * model.ModelConfig).proj() - model.GLM.proj()
        return model.TrainedModel.proj() - (model.TrainedModel.proj() * missing.proj())

    def make(self, key):
        cnn = (model.TrainedModel.Unit & key).to_dicts(order_by=("scan_key", "unit_id"))
        glm = {  # the GLM of the twin's own ModelConfig: fitted at the twin's input resolution
            (r["scan_key"], r["unit_id"]): r["test_corr"]
            for r in (model.GLM.Unit * model.Dataset.Member & key).to_dicts()
        }
        self.insert1(key)
        self.Unit.insert(
            dict(
                key,
                scan_key=r["scan_key"],
                unit_id=r["unit_id"],
                cnn_corr=r["test_corr"],
                glm_corr=glm[(r["scan_key"], r["unit_id"])],
                nonlinearity_index=float(
                    nonlinearity_index(r["test_corr"], glm[(r["scan_key"], r["unit_id"])])
                ),
            )
            for r in cnn
        )


def cluster_inputs(key: dict):
    """(ScanStack, cluster labels (N,), positions (N, 2), orientations (N,), ids) over every scan,
    neurons in (scan_key, neuron_idx) order; RFs and orientations from the optimal Gabors; ids:
    one {scan_key, unit_id} per neuron."""
    from insilico.twin_adapter import ScanStack

    rows = (clustering.Clustering.Unit * OptimalGabor.Unit * recording.Scan.Neuron & key).to_dicts(
        order_by=("scan_key", "neuron_idx")
    )
    stack = ScanStack([rm for _, _, rm in scan_models(key)])
    if len(rows) != len(stack.rf_positions):
        raise ValueError(
            f"{key}: {len(rows)} clustered neurons with optimal Gabors, model has "
            f"{len(stack.rf_positions)}"
        )
    labels = np.array([r["cluster"] for r in rows])
    positions = np.array([[r["x"], r["y"]] for r in rows], np.float64)
    orientations = np.array([r["orientation"] for r in rows], np.float64)
    ids = [{"scan_key": r["scan_key"], "unit_id": r["unit_id"]} for r in rows]
    return stack, labels, positions, orientations, ids


def _cluster_weights(stack) -> np.ndarray | None:
    """Each neuron's weight in its cluster's objective: 1 / its recorded-response s.d., so a
    cluster maximises the mean standardised response, as the twin was trained on (equal weights
    for an imported model, whose scale is unknown)."""
    sd = stack.response_sd
    return None if sd is None else 1.0 / sd


def _cluster_path(stack) -> dict:
    """``respond`` and ``center`` of the equivariant fast path for a twin's stack; none (the
    direct path) for an imported model's."""
    if not stack.has_fast_path:
        return {}
    return dict(respond=stack.fast_respond(), center=stack.center)


@schema
class ClusterOptimalGabor(dj.Computed):
    """Scored by the equivariant fast path for every neuron, border neurons included: for them it
    is the response to the stimulus on an unbounded gray screen rather than on the canvas (see
    insilico.twin_adapter). Per-neuron tables use the direct path at the border instead."""

    definition = """
    # one Gabor per cluster, shared up to each neuron's RF position and orientation (DT Eq. 1-2)
    -> clustering.Clustering
    -> OptimalGabor
    """

    class Cluster(dj.Part):
        definition = """
        -> master
        cluster             : int32
        ---
        size                : float32   # pixels
        sf                  : float32   # cycles / pixel
        size_deg            : float32   # degrees of visual angle
        sf_cpd              : float32   # cycles / degree
        contrast            : float32
        phase               : float32   # radians
        orientation_offset  : float32   # radians, added to each neuron's preferred orientation
        response            : float32   # mean predicted rate over the cluster
        """

    class Unit(dj.Part):
        definition = """
        # the cluster's Gabor as each neuron sees it: own RF and orientation, the rest shared
        -> master
        -> OptimalGabor.Unit
        ---
        x               : float32   # the neuron's RF centre (its optimal Gabor's), canvas pixels
        y               : float32
        size            : float32   # the cluster's
        sf              : float32   # the cluster's
        contrast        : float32   # the cluster's
        orientation     : float32   # own preferred + the cluster's offset (+ pi where better)
        phase           : float32   # the cluster's
        response        : float32   # this neuron's predicted rate
        """

    def make(self, key):
        stack, labels, positions, orientations, ids = cluster_inputs(key)
        grid, _ = _grids(_params(key), stack.pixels_per_degree)
        best = search.cluster_optimal_gabor(
            stack,
            labels,
            grid,
            positions=positions,
            orientations=orientations,
            **_cluster_path(stack),
            weights=_cluster_weights(stack),
            progress=show_progress(),
        )
        best = units.in_degrees(best, stack.pixels_per_degree)
        shared = ("size", "sf", "size_deg", "sf_cpd", "contrast", "phase", "orientation_offset")
        self.insert1(key)
        self.Cluster.insert(
            dict(
                key,
                cluster=int(c),
                **{k: float(best[f"cluster_{k}"].values[i]) for k in shared + ("response",)},
            )
            for i, c in enumerate(best.cluster.values)
        )
        per_neuron = _columns(best, search.GABOR_KEYS + ("response",))
        self.Unit.insert(
            dict(key, **n, **{k: v[i] for k, v in per_neuron.items()}) for i, n in enumerate(ids)
        )


def _at_cluster(table):
    """``Cluster<Table>``: the tuning table ``table`` run at the cluster's optimal Gabor; the same
    curves and indices (columns meaning the same), keyed by ClusterOptimalGabor."""

    class Unit(dj.Part):
        definition = _at_cluster_gabor(table.Unit.definition)

    attrs = dict(
        __doc__=_AtClusterGabor.__doc__,
        __module__=__name__,
        definition=_at_cluster_gabor(table.definition),
        Unit=Unit,
        coords=table.coords,
        indices=table.indices,
        run=staticmethod(table.run),
    )
    return type(f"Cluster{table.__name__}", (_AtClusterGabor, dj.Computed), attrs)


# The tuning battery at the cluster's optimal Gabor (``gabor_source = 'cluster'`` in the export);
# declared here, where the schema resolves the foreign keys among this module's tables.
ClusterOrientationTuning = schema(_at_cluster(OrientationTuning))
ClusterPhaseTuning = schema(_at_cluster(PhaseTuning))
ClusterSizeContrastTuning = schema(_at_cluster(SizeContrastTuning))
ClusterPlaidTuning = schema(_at_cluster(PlaidTuning))
#: (tuning table at each neuron's optimal Gabor, the same at the cluster's)
BATTERY_PAIRS = (
    (OrientationTuning, ClusterOrientationTuning),
    (PhaseTuning, ClusterPhaseTuning),
    (SizeContrastTuning, ClusterSizeContrastTuning),
    (PlaidTuning, ClusterPlaidTuning),
)


@schema
class GaborSet(dj.Computed):
    """Scored by plain model evaluation: the stimuli stay at the screen centre (DT Fig. 5D-E)."""

    definition = """
    # up to 20 screen-centred Gabors chosen greedily to drive most neurons (DT Fig. 5D-E)
    -> OptimalGabor
    ---
    fraction        : float32   # a neuron is covered at >= fraction x its optimal-Gabor response
    n_neurons       : int32     # neurons of all scans of the model
    """

    class Stimulus(dj.Part):
        definition = """
        -> master
        rank            : int32     # selection order
        ---
        x               : float32   # screen centre, canvas pixels (column)
        y               : float32   # (row)
        size            : float32   # sigma of DT Eq. 1, canvas pixels
        sf              : float32   # cycles / canvas pixel
        size_deg        : float32   # size in degrees of visual angle
        sf_cpd          : float32   # cycles / degree
        contrast        : float32
        orientation     : float32   # radians
        phase           : float32   # radians
        n_covered       : int32     # neurons first covered by this stimulus
        coverage        : float32   # fraction of all neurons covered by stimuli 0..rank
        """

    fraction = 0.5
    n_select = 20

    def make(self, key):
        models, optimal = [], []
        for scan, _, rm in scan_models(key):
            models.append(rm)
            optimal.append(
                (OptimalGabor.Unit * recording.Scan.Neuron & key & {"scan_key": scan}).to_arrays(
                    "response", order_by="neuron_idx"
                )
            )
        grid, _ = _grids(_params(key), models[0].pixels_per_degree)
        best = search.greedy_gabor_set(
            models,
            np.concatenate(optimal),
            grid,
            fraction=self.fraction,
            n_select=self.n_select,
            progress=show_progress(),
        )
        best = units.in_degrees(best, models[0].pixels_per_degree)
        self.insert1(dict(key, fraction=self.fraction, n_neurons=best.attrs["n_neurons"]))
        columns = search.GABOR_KEYS + ("size_deg", "sf_cpd", "n_covered", "coverage")
        self.Stimulus.insert(
            dict(key, rank=int(r), **{c: best[c].values[r].item() for c in columns})
            for r in best["rank"].values
        )


@schema
class ClusterMEI(dj.Computed):
    """Optimised by the equivariant fast path for every neuron, as ClusterOptimalGabor."""

    definition = """
    # one Hermite-basis MEI per cluster, rotated and moved onto each neuron (DT Eq. 6-8)
    -> clustering.Clustering
    -> OptimalGabor
    """

    class Cluster(dj.Part):
        definition = """
        -> master
        cluster         : int32
        ---
        image           : <array>   # (H, W) float32 at canonical orientation 0, canvas centre
        coefficients    : <array>   # (K,) Hermite coefficients
        response        : float32   # mean predicted rate over the cluster
        """

    def make(self, key):
        from insilico.cluster_mei import cluster_mei

        stack, labels, positions, orientations, _ = cluster_inputs(key)
        p = _params(key)
        result = cluster_mei(
            stack,
            labels,
            positions=positions,
            orientations=orientations,
            **_cluster_path(stack),
            weights=_cluster_weights(stack),
            norm=p["mei_norm"] * stack.pixels_per_degree,
            steps=p["mei_steps"],
            progress=show_progress(),
        )
        images = result.images[:, 0].detach().cpu().numpy().astype(np.float32)
        coefficients = result.coefficients.detach().cpu().numpy().astype(np.float32)
        self.insert1(key)
        self.Cluster.insert(
            dict(
                key,
                cluster=int(c),
                image=images[i],
                coefficients=coefficients[i],
                response=float(result.cluster_responses[i]),
            )
            for i, c in enumerate(result.labels)
        )
