"""Bar codes to functional clusters: Readout -> Alignment -> Clustering, and the t-SNE Embedding.

Each ``make`` fetches its inputs, calls :mod:`clustering`, and inserts. Per-neuron results are
part rows keyed by the neuron (``scan_key``, ``unit_id``), so they join with every other table.
"""

from __future__ import annotations

import numpy as np
import torch

import clustering as cl

from . import codecs, dj, model, new_schema, recording, show_progress  # noqa: F401  (codecs registers <array>)
from .model import config_hash

schema = new_schema()


@schema
class Readout(dj.Computed):
    definition = """
    # each neuron's bar code (readout feature weights) and RF position from a trained twin
    -> model.TrainedModel
    ---
    features        : int32         # F
    orientations    : int32         # O
    """

    class Unit(dj.Part):
        definition = """
        -> master
        -> recording.Scan.Neuron
        ---
        barcode         : <array>   # (F, O) float32, feature-major (twin.core)
        rf_x            : float32   # canvas pixels (column)
        rf_y            : float32   # canvas pixels (row)
        """

    @property
    def key_source(self):
        """Trained models whose readout gives bar codes: imported models only with a
        rotation-equivariant core and a factorised readout (:func:`skipped` says which not)."""
        no_codes = model.ExternalModel & "barcode_order is null"
        return model.TrainedModel.proj() - no_codes.proj()

    def make(self, key):
        rows = []
        for scan, codes, rf in _scan_barcodes(key):
            unit_ids = (recording.Scan.Neuron & {"scan_key": scan}).to_arrays(
                "unit_id", order_by="neuron_idx"
            )
            rows += [
                dict(
                    key,
                    scan_key=scan,
                    unit_id=int(u),
                    barcode=c.astype(np.float32),
                    rf_x=p[0],
                    rf_y=p[1],
                )
                for u, c, p in zip(unit_ids, codes, rf)
            ]
        f, o = rows[0]["barcode"].shape
        self.insert1(dict(key, features=f, orientations=o))
        self.Unit.insert(rows)


def _scan_barcodes(key: dict):
    """(scan_key, bar codes (N, F, O), RF positions (N, 2)) per scan of a trained model: a
    twin's (feature-major), or an imported model's readout features read rotation-major."""
    if not model.is_external(key):
        twin = model.load_model(key, device="cpu")
        for scan in sorted(twin.readouts):
            yield scan, twin.barcodes(scan), twin.rf_positions(scan)
        return
    from insilico.external import ExternalResponseModel, equivariant_features

    module, spec = model.load_external(key)
    order = (model.ExternalModel & key).fetch1("barcode_order")
    for scan, data_key in sorted(spec["data_keys"].items()):
        flat, n_rot = equivariant_features(module, data_key)
        rf = ExternalResponseModel(module, data_key, spec["image_shape"]).rf_positions
        yield scan, cl.as_barcodes(flat, n_rot, order), rf


def skipped() -> list[str]:
    """One line per imported model that the clustering stage (and the per-cluster in-silico
    tables) skips, saying why: its readout gives no bar codes."""
    rows = (model.ExternalModel & "barcode_order is null").to_dicts(order_by="model_hash")
    return [
        f"clustering skips imported model {r['model_hash']} ({r['source']}): {r['barcode_note']}"
        for r in rows
    ]


def fetch_barcodes(key: dict) -> tuple[list[dict], np.ndarray]:
    """Neuron keys (scan_key, unit_id) and bar codes (N, F, O) of a Readout, in a fixed order."""
    scans, units, codes = (Readout.Unit & key).to_arrays(
        "scan_key", "unit_id", "barcode", order_by=("scan_key", "unit_id")
    )
    return [dict(scan_key=s, unit_id=int(u)) for s, u in zip(scans, units)], np.stack(codes)


@schema
class AlignmentParams(dj.Lookup):
    definition = """
    # CyclicAligner parameters (ICLR Eq. 5 and the beta sweep), deduplicated by hash
    alignment_hash  : char(32)
    ---
    params          : json          # keyword arguments of clustering.CyclicAligner
    """

    @classmethod
    def add(cls, **params) -> dict:
        defaults = {"n_betas": 20, "min_temperature": 5.0, "metric": "euclidean", "random_state": 0}
        unknown = set(params) - set(defaults) - {"max_iter", "refine_iter", "lr"}
        if unknown:
            raise KeyError(f"unknown alignment parameters {sorted(unknown)}")
        params = {**defaults, **params}
        key = {"alignment_hash": config_hash(params)}
        cls.insert1(dict(key, params=params), skip_duplicates=True)
        return key


def aligner(params: dict) -> cl.CyclicAligner:
    p = dict(params)
    betas = np.logspace(-3, 1, p.pop("n_betas"))
    return cl.CyclicAligner(betas=betas, progress=show_progress(), **p)


@schema
class Alignment(dj.Computed):
    definition = """
    # bar codes rotated to a canonical orientation (von Mises relaxation, beta sweep)
    -> Readout
    -> AlignmentParams
    ---
    temperature     : float32       # T of the chosen fit
    beta            : float32       # beta of the chosen fit
    losses          : <blob>        # per beta: (beta, temperature, eq3, eq5, n_iter)
    """

    class Unit(dj.Part):
        definition = """
        -> master
        -> Readout.Unit
        ---
        angle           : float32   # radians; rotating the bar code by it aligns it
        aligned         : <array>   # (F, O) float32
        """

    def make(self, key):
        neurons, codes = fetch_barcodes(key)
        fitted = aligner((AlignmentParams & key).fetch1("params")).fit(codes)
        aligned = fitted.transform(codes)
        self.insert1(
            dict(key, temperature=fitted.temperature_, beta=fitted.beta_, losses=fitted.losses_)
        )
        self.Unit.insert(
            dict(key, **n, angle=a, aligned=np.asarray(x, np.float32))
            for n, a, x in zip(neurons, fitted.angles_, aligned)
        )


def fetch_aligned(key: dict) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Neuron keys, aligned bar codes (N, F, O) and angles (N,) of an Alignment."""
    scans, units, codes, angles = (Alignment.Unit & key).to_arrays(
        "scan_key", "unit_id", "aligned", "angle", order_by=("scan_key", "unit_id")
    )
    return [dict(scan_key=s, unit_id=int(u)) for s, u in zip(scans, units)], np.stack(codes), angles


@schema
class ClusteringParams(dj.Lookup):
    definition = """
    clustering_hash : char(32)
    ---
    method          : enum('gmm', 'kmeans')  # gmm: spherical covariances
    n_clusters      : int32         # 0: chosen from held-out likelihood + stability (choose_k)
    seed            : int32
    heldout_max_k   : int32         # held-out likelihood curve over k = 2..heldout_max_k
    """

    @classmethod
    def add(
        cls, method: str = "kmeans", n_clusters: int = 0, seed: int = 0, heldout_max_k: int = 12
    ) -> dict:
        params = dict(
            method=method,
            n_clusters=int(n_clusters),
            seed=int(seed),
            heldout_max_k=int(heldout_max_k),
        )
        if method not in ("gmm", "kmeans"):
            raise ValueError(f"method must be 'gmm' or 'kmeans', got {method!r}")
        if int(n_clusters) < 0 or int(heldout_max_k) < 2:
            raise ValueError(
                f"[clustering] n_clusters must be >= 0 (0: chosen) and heldout_max_k >= 2; got "
                f"{n_clusters}, {heldout_max_k}"
            )
        key = {"clustering_hash": config_hash(params)}
        cls.insert1(dict(key, **params), skip_duplicates=True)
        return key


@schema
class Clustering(dj.Computed):
    definition = """
    # clusters of aligned bar codes, held-out likelihood over k, and the cluster confusion matrix
    -> Alignment
    -> ClusteringParams
    ---
    n_clusters      : int32         # k used
    k_reason        : varchar(255)  # why: set in the config, or the rule that chose it
    centres         : <array>       # (k, F, O) cluster means of the aligned bar codes
    heldout_k       : <array>       # (K,) numbers of clusters tried
    heldout_ll      : <array>       # (K,) held-out GMM log-likelihood per neuron (nats)
    heldout_se      : <array>       # (K,) s.e. of each k's mean difference from the best k
    stability       : <array>       # (K,) ARI of k-means partitions between random halves
    confusion       : <array>       # (k, k) correlation of cluster-mean neurons over train images
    block           : <array>       # (k,) block of each cluster at correlation 0.5
    block_order     : <array>       # (k,) cluster order that puts blocks together
    """

    class Unit(dj.Part):
        definition = """
        -> master
        -> Alignment.Unit
        ---
        cluster         : int32
        """

    def make(self, key):
        p = (ClusteringParams & key).fetch1()
        neurons, aligned, _ = fetch_aligned(key)
        ks = np.arange(1, max(3, min(p["heldout_max_k"], len(aligned) // 10)) + 1)
        scores = cl.heldout_scores(aligned, ks, random_state=p["seed"], progress=show_progress())
        stable = cl.stability(aligned, ks, random_state=p["seed"], progress=show_progress())
        chosen, se = cl.choose_k(ks, scores, stable)
        k, reason = (
            (p["n_clusters"], "n_clusters set in the config")
            if p["n_clusters"]
            else (chosen, f"{cl.K_RULE}, over k = {ks[0]}..{ks[-1]}")
        )
        labels, centres = cl.fit_clusters(aligned, p["method"], k, random_state=p["seed"])
        features, output = _centre_inputs(key)
        confusion = cl.cluster_confusion(features, centres, nonlinearity=output)
        order, block = cl.greedy_blocks(confusion, threshold=0.5)
        self.insert1(
            dict(
                key,
                n_clusters=k,
                k_reason=reason,
                centres=centres.astype(np.float32),
                heldout_k=ks,
                heldout_ll=scores.mean(0),
                heldout_se=se,
                stability=stable,
                confusion=confusion,
                block=np.asarray(block),
                block_order=np.asarray(order),
            )
        )
        self.Unit.insert(dict(key, **n, cluster=int(c)) for n, c in zip(neurons, labels))


def _centre_inputs(key: dict):
    """(core output (n_images, F, O) at the canvas centre, output nonlinearity) of the trained
    model, for the confusion matrix: the twin's; or an imported model's core read in its
    bar-code order, with neuralpredictors' ELU + 1 (``elu_offset``) where it has one, else
    none (a linear output)."""
    if not model.is_external(key):
        twin = model.load_model(key, device="cpu")
        return centre_features(twin), lambda a: twin.output(torch.as_tensor(a)).numpy()
    module, spec = model.load_external(key)
    scan = sorted(spec["data_keys"])[0]
    arrays = recording.load_scan(scan, tuple(spec["image_shape"]))
    images = arrays["images"][arrays["tiers"] == "train"]
    images = (images - images.mean()) / images.std()  # as the model's metrics (model.py)
    with torch.no_grad():
        out = module.core(torch.from_numpy(images[:2000]).float())
    h, w = out.shape[-2:]
    orientations = (Readout & key).fetch1("orientations")
    order = (model.ExternalModel & key).fetch1("barcode_order")
    features = cl.as_barcodes(out[:, :, h // 2, w // 2].numpy(), orientations, order)
    offset = getattr(module, "elu_offset", None)
    if offset is None:
        return features, lambda a: np.asarray(a)
    return features, lambda a: torch.nn.functional.elu(torch.as_tensor(a) + offset).numpy() + 1


def centre_features(twin, max_images: int = 2000) -> np.ndarray:
    """Core output (n_images, F, O) at the canvas centre for the twin's training images."""
    scan = sorted(twin.readouts)[0]
    arrays = recording.load_scan(scan, twin.image_shape)
    images = arrays["images"][arrays["tiers"] == "train"][:max_images]
    with torch.no_grad():
        out = twin.features(torch.from_numpy(twin.standardize(images)))
    h, w = out.shape[-2:]
    f, o = twin.core.out_features, twin.core.orientations
    return out[:, :, h // 2, w // 2].reshape(-1, f, o).numpy()


@schema
class Embedding(dj.Computed):
    definition = """
    # 2-D t-SNE (openTSNE) of the aligned bar codes
    -> Alignment
    ---
    perplexity      : float32
    """

    class Unit(dj.Part):
        definition = """
        -> master
        -> Alignment.Unit
        ---
        x               : float32
        y               : float32
        """

    def make(self, key):
        neurons, aligned, _ = fetch_aligned(key)
        perplexity = float(min(30, max(2, (len(aligned) - 1) // 3)))
        xy = cl.tsne_embedding(aligned, random_state=0, perplexity=perplexity)
        self.insert1(dict(key, perplexity=perplexity))
        self.Unit.insert(dict(key, **n, x=p[0], y=p[1]) for n, p in zip(neurons, xy))
