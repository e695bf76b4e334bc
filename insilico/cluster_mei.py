"""Cluster MEIs in a steerable Hermite basis (DT Eq. 4-8).

One stimulus per cluster, x = beta^T Psi (Eq. 4): Psi are the 2D Hermite functions of
:mod:`twin.hermite` (K_b = n_orders (n_orders + 1) / 2 of them, width ``sigma`` pixels). Neuron i
of cluster k sees it rotated to its own preferred orientation theta_i (plus an offset phi_i, Eq. 7)
-- the coefficients are rotated by the exact Hermite rotation matrix (Eq. 5) -- and moved onto its
own RF (Eq. 8). beta_k maximises the cluster's mean response under ||x||_2 = norm (Eq. 6), by
projected, normalised gradient ascent; all clusters in one batch (the objective is the sum over
clusters and each beta_k gets only its own neurons' gradient), no loop over neurons or clusters.

Conventions. Orientations follow :mod:`insilico.stimuli` (radians, increasing = clockwise as
displayed; 0 = horizontal stripes). The cluster MEI is returned in the *canonical* orientation 0:
what a neuron of the cluster with preferred orientation 0 at the canvas centre is shown. The
Hermite module rotates counter-clockwise, so orientation t is the Hermite rotation by -t. Rotation
matrices for arbitrary angles are exact: every matrix entry is a trigonometric polynomial of
degree <= n_orders - 1 in the angle, so 2 n_orders - 1 equispaced samples
(``twin.hermite.rotation_matrix``) determine it everywhere (Dirichlet-kernel interpolation).

Eq. 7 (max over per-neuron angles phi_i) is a max over ``orientation_offsets`` (default
(0, pi): rotation by pi turns a Gabor of phase tau into phase -tau, so the max absorbs the sign
ambiguity of the preferred orientation; add e.g. +-pi/12 for a local search). The max is
re-evaluated at every step (the gradient flows through the best offset of each neuron).

Two paths (as in :mod:`insilico.search`):

* ``respond`` given (the twin's fast path, ``respond(stimuli_centred (B,1,H,W)) -> (B,N)``; its
  ``.center`` attribute or ``center=`` says where stimuli are centred): each cluster's stimulus is
  synthesised, rotated exactly to ``n_angles`` angles over [0, 2 pi) (default 24, 15 degrees apart),
  at the centre; neuron i reads the angle nearest to theta_i + phi. K * n_angles images per step,
  independent of the number of neurons. ``n_angles=None``: each neuron's exact angle (N * offsets
  images per step, responses of all neurons to all images: only for small N).
* ``respond=None`` (direct reference): each neuron's stimulus is synthesised at its own RF with
  its exact angle, and only its own response is kept (``own_responses``; the twin's
  ``respond_own``). N * offsets images per step; the per-neuron basis takes N * K_b * H * W floats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import trange

from twin import hermite

from .mei import NORM_DEG
from .model import (
    RespondFn,
    canvas_center,
    cluster_weights,
    image_shape,
    model_device,
    own_responses,
    pixels_per_degree,
    preferred_orientations,
    rf_positions,
)

#: Default reach of the Hermite basis's highest order from its centre, degrees (12 px of the
#: 36 x 64 canvas at its default 0.305 px / deg, :mod:`insilico.units`).
EXTENT_DEG = 40.0

__all__ = [
    "ClusterMEIResult",
    "cluster_mei",
    "canvas_basis",
    "rotation_matrices_at",
    "rotate_coefficients",
    "synthesize",
]


# ---------------------------------------------------------------------------------------------
# Basis and exact rotations
# ---------------------------------------------------------------------------------------------
def default_sigma(n_orders: int, extent: float) -> float:
    """Hermite width (px) whose highest order reaches ``extent`` px from the centre."""
    return extent / math.sqrt(2 * (n_orders - 1) + 1) if n_orders > 1 else extent / 2


def canvas_basis(positions, n_orders: int, sigma: float, height: int, width: int) -> torch.Tensor:
    """Hermite functions centred at each (x, y) of ``positions`` (P, 2) on the canvas:
    (P, K_b, H, W) float32. Coordinates as :mod:`twin.hermite` (x rightwards, y upwards)."""
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    row, col = np.mgrid[0:height, 0:width].astype(np.float64)
    xs = col[None] - pos[:, 0, None, None]
    ys = pos[:, 1, None, None] - row[None]
    f = hermite.hermite_functions(xs, ys, n_orders, sigma)  # (K, P, H, W)
    return torch.as_tensor(np.moveaxis(f, 0, 1), dtype=torch.float32)


_SAMPLES: dict = {}


def _samples(n_orders: int) -> torch.Tensor:
    if n_orders not in _SAMPLES:
        j = 2 * n_orders - 1
        _SAMPLES[n_orders] = torch.as_tensor(
            hermite.rotation_matrices(j, n_orders), dtype=torch.float64
        )  # (J, K, K)
    return _SAMPLES[n_orders]


def rotation_matrices_at(angles, n_orders: int) -> torch.Tensor:
    """Exact Hermite rotation matrices (counter-clockwise, radians) for any angles: (*A, K, K).

    Dirichlet-kernel interpolation of the 2 n_orders - 1 sampled matrices (exact: the entries are
    trigonometric polynomials of degree n_orders - 1). Equals ``hermite.rotation_matrix``."""
    a = torch.as_tensor(np.asarray(angles, dtype=np.float64))
    m = _samples(n_orders)
    j = m.shape[0]
    u = a[..., None] - torch.arange(j, dtype=torch.float64) * (2 * math.pi / j)  # (*A, J)
    s = torch.sin(u / 2)
    small = s.abs() < 1e-9
    # J odd: the Dirichlet kernel's limit at u = 0 mod 2 pi is J
    d = torch.where(
        small,
        torch.full_like(u, float(j)),
        torch.sin(j * u / 2) / torch.where(small, torch.ones_like(s), s),
    )
    return torch.einsum("...j,jkl->...kl", d / j, m).float()


def rotate_coefficients(beta: torch.Tensor, orientation, n_orders: int) -> torch.Tensor:
    """Coefficients (..., K) of the stimulus turned to ``orientation`` (insilico convention:
    clockwise as displayed, radians; broadcast against beta's leading dims) -> (..., K)."""
    r = rotation_matrices_at(-np.asarray(orientation, dtype=np.float64), n_orders).to(beta.device)
    return torch.einsum("...kl,...l->...k", r, beta)


def synthesize(beta: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """beta (..., K) x basis (K, H, W) or (..., K, H, W) -> images (..., 1, H, W)."""
    if basis.dim() == 3:
        return torch.einsum("...k,khw->...hw", beta, basis).unsqueeze(-3)
    return torch.einsum("...k,...khw->...hw", beta, basis).unsqueeze(-3)


# ---------------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------------
@dataclass
class ClusterMEIResult:
    """labels (K,): cluster labels; coefficients (K, K_b): beta_k, canonical orientation 0;
    images (K, 1, H, W): the cluster MEIs in the canonical orientation at ``center``;
    cluster_responses (K,): final mean response of each cluster's neurons;
    neuron_labels (N,), neuron_responses (N,), neuron_offsets (N,): each neuron's cluster, its
    response and the chosen angle offset phi_i (radians); orientations (N,), positions (N, 2): the
    theta_i and RFs used; history (steps,): mean over clusters of the objective per step;
    n_orders, sigma, center: the basis; image_shape: the canvas (H, W)."""

    labels: np.ndarray
    coefficients: torch.Tensor
    images: torch.Tensor
    cluster_responses: np.ndarray
    neuron_labels: np.ndarray
    neuron_responses: np.ndarray
    neuron_offsets: np.ndarray
    orientations: np.ndarray
    positions: np.ndarray
    history: np.ndarray
    n_orders: int
    sigma: float
    center: tuple
    image_shape: tuple

    def neuron_stimuli(self) -> torch.Tensor:
        """Each neuron's stimulus (N, 1, H, W): its cluster MEI at its exact angle
        theta_i + phi_i, at its RF (e.g. for ``experiments.stimulus_comparison``)."""
        inv = np.searchsorted(self.labels, self.neuron_labels)
        beta = rotate_coefficients(
            self.coefficients.cpu()[inv], self.orientations + self.neuron_offsets, self.n_orders
        )
        basis = canvas_basis(self.positions, self.n_orders, self.sigma, *self.image_shape)
        return synthesize(beta, basis)


# ---------------------------------------------------------------------------------------------
# Optimisation
# ---------------------------------------------------------------------------------------------
def _chunks(n, size):
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def cluster_mei(
    model,
    clusters,
    *,
    positions=None,
    orientations=None,
    respond: RespondFn | None = None,
    center=None,
    n_orders: int = 9,
    sigma: float | None = None,
    norm: float | None = None,
    steps: int = 100,
    lr: float = 0.1,
    orientation_offsets: Sequence[float] = (0.0, math.pi),
    n_angles: int | None = 24,
    seed: int = 0,
    init=None,
    weights=None,
    chunk_size: int = 256,
    device=None,
    progress: bool = False,
) -> ClusterMEIResult:
    """Cluster MEIs (DT Eq. 4-8); see the module docstring.

    model: ResponseModel (for the direct path, the device and default RFs / orientations);
    clusters (N,): a label per neuron; positions (N, 2), orientations (N,): RFs and preferred
    orientations theta_i (defaults: the model's; for the twin the optimal Gabors' x, y,
    orientation); respond / center: the fast path (``respond.center`` is used if center is None);
    n_orders, sigma: the Hermite basis, pixels (sigma default :func:`default_sigma`: the highest
    order reaches ``EXTENT_DEG``); norm: L2 norm of the canonical image (standardized units,
    canvas pixels; default ``mei.NORM_DEG`` x pixels per degree); steps, lr:
    x-space normalised gradient steps of lr_t * norm, lr_t cosine-decaying from lr to lr / 10;
    orientation_offsets: the phi of Eq. 7; n_angles: see module doc; init (K, K_b): start;
    weights (N,): each neuron's weight in its cluster's mean (default equal; e.g. 1 / response
    s.d., :func:`insilico.model.cluster_weights`); ``cluster_responses`` are plain mean rates.
    progress: a tqdm bar over the steps.

    Returns :class:`ClusterMEIResult`.
    """
    pos = rf_positions(model, positions)
    n = len(pos)
    theta = preferred_orientations(model, orientations, n)
    labels = np.asarray(clusters)
    if labels.shape != (n,):
        raise ValueError(
            f"clusters must have shape ({n},) (one label per neuron); got {labels.shape}"
        )
    uniq, inv = np.unique(labels, return_inverse=True)
    kc = len(uniq)
    device = torch.device(device) if device is not None else model_device(model)
    height, width = image_shape(model)
    if sigma is None or norm is None:
        ppd = pixels_per_degree(model)
        sigma = default_sigma(n_orders, EXTENT_DEG * ppd) if sigma is None else float(sigma)
        norm = NORM_DEG * ppd if norm is None else float(norm)
    if respond is not None and center is None:
        center = getattr(respond, "center", None)
    center = canvas_center((height, width)) if center is None else tuple(float(c) for c in center)
    offsets = np.asarray(orientation_offsets, dtype=np.float64).ravel()
    n_off = len(offsets)
    w = torch.as_tensor(cluster_weights(inv, weights), dtype=torch.float32, device=device)
    inv_t = torch.as_tensor(inv, device=device)

    centre_basis = canvas_basis([center], n_orders, sigma, height, width)[0].to(device)  # (Kb,H,W)
    kb = centre_basis.shape[0]
    gram = torch.einsum("khw,lhw->kl", centre_basis, centre_basis)
    ginv = torch.linalg.pinv(gram)

    def project(b):
        nrm = torch.einsum("ck,kl,cl->c", b, gram, b).clamp_min(1e-24).sqrt()
        return b * (norm / nrm)[:, None]

    if init is not None:
        beta = torch.as_tensor(init, dtype=torch.float32).to(device).clone()
        if tuple(beta.shape) != (kc, kb):
            raise ValueError(f"init must have shape ({kc}, {kb}); got {tuple(beta.shape)}")
    else:
        gen = torch.Generator().manual_seed(seed)
        beta = torch.randn(kc, kb, generator=gen).to(device)
    beta = project(beta)

    targets = theta[None, :] + offsets[:, None]  # (n_off, N), insilico orientation
    if respond is not None and n_angles:
        # ---- fast path on an angle grid: K * A centred images --------------------------------
        a = int(n_angles)
        step_a = 2 * math.pi / a
        rot = rotation_matrices_at(np.arange(a) * step_a, n_orders).to(device)  # (A, Kb, Kb) ccw
        near = np.rint(-targets / step_a).astype(np.int64) % a  # hermite angle -t
        # candidate image row of (offset j, neuron i): cluster-major rows c * A + a
        cand = torch.as_tensor(inv[None, :] * a + near, device=device)  # (n_off, N)

        def images_of(b, rows):
            c, ang = rows // a, rows % a
            coef = torch.einsum("rkl,rl->rk", rot[ang], b[c])
            return synthesize(coef, centre_basis)

        def evaluate(b, rows, need_grad):
            """responses (len(rows), N) of all neurons to the given image rows."""
            outs = []
            for sl in _chunks(len(rows), chunk_size):
                with torch.set_grad_enabled(need_grad):
                    outs.append(respond(images_of(b, rows[sl])).to(device, torch.float32))
            return torch.cat(outs, 0)

        all_rows = torch.arange(kc * a, device=device)

        def objective(b, need_grad):
            with torch.no_grad():
                table = evaluate(b, all_rows, False)  # (K*A, N)
                val = table.gather(0, cand)  # (n_off, N)
                best = val.argmax(0)  # (N,)
            rows_i = cand.gather(0, best[None])[0]  # (N,)
            if not need_grad:
                return val.max(0).values, best
            used, pos_i = torch.unique(rows_i, return_inverse=True)
            total = torch.zeros((), device=device)
            for sl in _chunks(len(used), chunk_size):
                r = respond(images_of(b, used[sl])).to(device, torch.float32)  # (c, N)
                mine = (pos_i >= sl.start) & (pos_i < sl.stop)
                idx = torch.nonzero(mine)[:, 0]
                total = total + (w[idx] * r[pos_i[idx] - sl.start, idx]).sum()
            return total, best
    else:
        # ---- exact per-neuron angles: direct (rendered at RF) or fast with N images -----------
        rot = rotation_matrices_at(-targets, n_orders).to(device)  # (n_off, N, Kb, Kb)
        if respond is None:
            basis = canvas_basis(pos, n_orders, sigma, height, width).to(device)  # (N, Kb, H, W)
        nidx = torch.arange(n, device=device)

        def responses(b, j_of_i, sel):
            """response of neurons ``sel`` to their own stimulus at offsets j_of_i[sel]."""
            coef = torch.einsum("mkl,ml->mk", rot[j_of_i[sel], sel], b[inv_t[sel]])
            if respond is None:
                return own_responses(model, synthesize(coef, basis[sel]), sel).float()
            r = respond(synthesize(coef, centre_basis)).float()  # (m, N)
            return r.gather(1, sel[:, None])[:, 0]

        def run(b, j_of_i, need_grad):
            out = []
            for sl in _chunks(n, chunk_size):
                with torch.set_grad_enabled(need_grad):
                    out.append(responses(b, j_of_i, nidx[sl]))
            return torch.cat(out)

        def objective(b, need_grad):
            with torch.no_grad():
                if n_off > 1:
                    val = torch.stack(
                        [run(b, torch.full((n,), j, device=device), False) for j in range(n_off)]
                    )  # (n_off, N)
                    best = val.argmax(0)
                else:
                    best = torch.zeros(n, dtype=torch.long, device=device)
            if not need_grad:
                return (val.max(0).values if n_off > 1 else run(b, best, False)), best
            total = torch.zeros((), device=device)
            for sl in _chunks(n, chunk_size):
                sel = nidx[sl]
                total = total + (w[sel] * responses(b, best, sel)).sum()
            return total, best

    history = np.zeros(steps)
    bar = trange(
        steps, desc=f"cluster MEI of {kc} clusters", unit="step", disable=not progress, leave=False
    )
    for t in bar:
        b = beta.detach().requires_grad_(True)
        total, _ = objective(b, True)
        (g,) = torch.autograd.grad(total, b)
        history[t] = float(total.detach()) / kc
        with torch.no_grad():
            gx = torch.einsum("ck,kl,cl->c", g, ginv, g).clamp_min(0).sqrt()
            lr_t = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / max(1, steps - 1))))
            # ascent along the x-space gradient direction (G^-1 g), step lr_t * norm in x
            d = g @ ginv
            beta = project(beta + lr_t * norm * d / gx.clamp_min(1e-12)[:, None])
    with torch.no_grad():
        final, best = objective(beta, False)
    final = final.float().cpu().numpy().astype(np.float64)
    best = best.cpu().numpy()
    cl_resp = np.bincount(inv, weights=final) / np.bincount(inv)
    images = synthesize(beta, centre_basis).cpu()
    return ClusterMEIResult(
        labels=uniq,
        coefficients=beta.cpu(),
        images=images,
        cluster_responses=cl_resp,
        neuron_labels=labels,
        neuron_responses=final,
        neuron_offsets=offsets[best],
        orientations=theta,
        positions=pos,
        history=history,
        n_orders=n_orders,
        sigma=sigma,
        center=center,
        image_shape=(height, width),
    )
