"""Rotation alignment of bar codes: minimise ICLR Eq. 5 over per-neuron angles and
the temperature T.

Distances. The paper's Eq. 3 and Eq. 5 use the plain (non-squared) Euclidean norm, and that is the
default here (``metric="euclidean"``): each pair pulls with a unit-length gradient however close it
already is, so neurons of one type collapse onto one representative even when other types are far
away. Its pairwise sum has no closed form, so it is computed over all pairs when N(N-1)/2 * K <=
2**24 (from the N x N Gram matrix, :func:`all_pairs_mean`) and otherwise over ``pair_sample`` random
partners per neuron, drawn afresh at every step (an unbiased estimate of the mean pairwise distance,
O(N * pair_sample * K) memory and time; no N x N x K tensor is ever built).
``metric="sqeuclidean"`` uses squared distances and the exact identity
sum_{i<j} ||a_i - a_j||^2 = N * sum_i ||a_i - mean(a)||^2 (O(N K)): every readout is then aligned
to the common mean, which is cheaper and deterministic but lets far-apart types dominate the
alignment of each other.

Scale of beta. Both sums of Eq. 5 are taken as means (over pairs and over neurons), so one beta
means the same trade-off for any N; this is Eq. 5 with beta multiplied by (N - 1) / 2. Reported
losses are means too (Eq. 3 / number of pairs).
"""

import math
import warnings

import numpy as np
import torch
from tqdm.auto import tqdm

from .rotation import as_barcodes, relaxed_rotate, rotate

DEFAULT_BETAS = tuple(np.logspace(-3, 1, 20))
_MAX_EXACT_ELEMENTS = 2**24  # pairs x K: above it, the exact Euclidean training term is sampled
_MAX_EVAL_PAIRS = 10_000_000  # above this, Eq. 3 / Eq. 5 are evaluated on a fixed sample of pairs
_N_EVAL_PAIRS = 500_000
_EPS = 1e-12  # smooths ||d|| = sqrt(||d||^2 + eps) at d = 0

LOSS_DTYPE = np.dtype(
    [("beta", "f8"), ("temperature", "f8"), ("eq3", "f8"), ("eq5", "f8"), ("n_iter", "i8")]
)


def select_fit(temperatures, eq3_losses, min_temperature=5.0):
    """Index of the chosen fit: smallest Eq. 3 loss among fits with T > min_temperature.

    temperatures, eq3_losses: (n_betas,). If no fit has T > min_temperature, warns and returns the
    fit with the smallest Eq. 3 loss overall.
    """
    temperatures, eq3_losses = np.asarray(temperatures), np.asarray(eq3_losses)
    ok = temperatures > min_temperature
    if not ok.any():
        warnings.warn(
            f"no fit reached T > {min_temperature} (max T = {temperatures.max():.3g}); "
            "choosing the smallest Eq. 3 loss overall",
            RuntimeWarning,
            stacklevel=2,
        )
        ok = np.ones_like(ok)
    return int(np.flatnonzero(ok)[np.argmin(eq3_losses[ok])])


def energy_angles(barcodes):
    """Initial angles: circular mean of each neuron's orientation energy.

    barcodes: (N, F, O) tensor. Returns (N,) radians in [0, 2*pi); rotating by them moves the
    energy-weighted mean orientation sum_f r[f, o]^2 to index 0. Equivariant: a cyclic shift of a
    bar code by k orientations shifts its angle by 2*pi*k/O.
    """
    n_orient = barcodes.shape[-1]
    energy = (barcodes**2).sum(1)
    phase = torch.arange(n_orient, device=barcodes.device, dtype=barcodes.dtype) * (
        2 * math.pi / n_orient
    )
    angle = torch.atan2((energy * torch.sin(phase)).sum(1), (energy * torch.cos(phase)).sum(1))
    return torch.remainder(angle, 2 * math.pi)


def _norm(d):
    return torch.sqrt((d * d).sum(-1) + _EPS)


def _random_pairs(n, rounds, generator, device):
    """(2, rounds * n) index pairs, no self-pairs: each round pairs p[k] with p[k + s] for a random
    permutation p and offset s in [1, n)."""
    firsts, seconds = [], []
    for perm, offset in _random_rounds(n, rounds, generator, device):
        firsts.append(perm)
        seconds.append(torch.roll(perm, -offset))
    return torch.stack([torch.cat(firsts), torch.cat(seconds)])


def _random_rounds(n, rounds, generator, device):
    """[(permutation (n,), offset in [1, n))] * rounds, drawn from ``generator``."""
    return [
        (
            torch.randperm(n, generator=generator).to(device),
            int(torch.randint(1, n, (1,), generator=generator)),
        )
        for _ in range(rounds)
    ]


def sampled_pairwise_mean(a, rounds):
    """Mean ||a_i - a_j|| over the pairs of :func:`_random_rounds`: per round one gather of the N
    rows and a roll, O(N K) memory. a: (N, K); rounds: [(perm, offset)]. Differentiable."""
    total = 0.0
    for perm, offset in rounds:
        b = a.index_select(0, perm)
        total = total + _norm(b - torch.roll(b, -offset, 0)).mean()
    return total / len(rounds)


def all_pairs_mean(a):
    """Mean ||a_i - a_j|| over all pairs i < j, from the Gram matrix: (N, N) float64 numbers and
    one (N, K) x (K, N) product, ||a_i - a_j||^2 = |a_i|^2 + |a_j|^2 - 2 a_i . a_j (float64, so
    the cancellation of near pairs costs ~1e-16 of |a|^2). a: (N, K). Differentiable; the
    diagonal is masked, so its zero distances pass no gradient."""
    n = a.shape[0]
    x = a.double()
    sq = (x * x).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * (x @ x.T)).clamp_min(0)
    diagonal = torch.eye(n, dtype=torch.bool, device=a.device)
    dist = torch.sqrt(torch.where(diagonal, 0.0, d2) + _EPS)
    return ((dist.sum() - n * math.sqrt(_EPS)) / (n * (n - 1))).to(a.dtype)


def pairwise_mean(a, metric="euclidean", pairs=None):
    """Mean over pairs i < j of ||a_i - a_j|| (``euclidean``) or ||a_i - a_j||^2 (``sqeuclidean``).

    a: (N, K). pairs: optional (2, P) indices, or random rounds [(perm, offset)] (see
    :func:`sampled_pairwise_mean`), to average over instead of all pairs (Euclidean only; all
    pairs: :func:`all_pairs_mean`). Differentiable. The squared case uses
    sum_{i<j} ||a_i - a_j||^2 = N sum_i ||a_i - mean||^2.
    """
    n = a.shape[0]
    if metric == "sqeuclidean":
        centred = a - a.mean(0, keepdim=True)
        return n * (centred * centred).sum() / (n * (n - 1) / 2)
    if metric != "euclidean":
        raise ValueError(f"metric must be 'euclidean' or 'sqeuclidean', got {metric!r}")
    if pairs is None:
        return all_pairs_mean(a)
    if isinstance(pairs, list):
        return sampled_pairwise_mean(a, pairs)
    return _norm(a.index_select(0, pairs[0]) - a.index_select(0, pairs[1])).mean()


@torch.no_grad()
def _eval_pairwise_mean(a, metric, eval_pairs):
    """Mean pairwise distance without gradients, in chunks: all pairs, or ``eval_pairs`` (2, P)."""
    if metric == "sqeuclidean":
        return float(pairwise_mean(a.double(), metric))
    n, k = a.shape
    if eval_pairs is not None:
        chunk = max(1, _MAX_EXACT_ELEMENTS // k)
        total = sum(
            float(
                _norm(
                    a.index_select(0, eval_pairs[0, s : s + chunk])
                    - a.index_select(0, eval_pairs[1, s : s + chunk])
                )
                .double()
                .sum()
            )
            for s in range(0, eval_pairs.shape[1], chunk)
        )
        return total / eval_pairs.shape[1]
    rows = max(1, _MAX_EXACT_ELEMENTS // (n * k))
    total = 0.0
    for s in range(0, n, rows):
        d = a[s : s + rows, None, :] - a[None, :, :]
        total += float(_norm(d).double().sum())
    total -= n * math.sqrt(_EPS)  # the diagonal's smoothing term
    return total / 2 / (n * (n - 1) / 2)


class CyclicAligner:
    """Align bar codes to a canonical orientation (ICLR Eq. 3-5).

    For each beta, Adam minimises Eq. 5 (relaxed rotation, Eq. 4) over the angles alpha_i and
    log T, from angles initialised by :func:`energy_angles` and T = ``init_temperature``; the
    learning rate is divided by 10 ``n_lr_decays`` times, each time the loss has not improved by a
    relative ``tol`` for ``patience`` steps (the best state so far is restored), then it stops.
    The chosen fit has the smallest Eq. 3 loss (exact rotation, Eq. 2) among fits with
    T > ``min_temperature``; if none qualifies, a warning is issued and the smallest Eq. 3 loss
    overall is chosen. Its angles are then polished by ``refine_iter`` Adam steps on Eq. 3 itself
    (exact rotation, same early stopping): the relaxation exists to escape local minima, but at high
    T it snaps to the nearest integer shift instead of interpolating, so the polished angles align
    the Eq. 2 rotation used by ``transform`` more closely (``refine_iter=0`` keeps the paper's
    angles).

    Parameters
    ----------
    betas : sequence of float, weights of the reconstruction term (default 20 log-spaced in [1e-3,
    10]).
    min_temperature : float, T must exceed it for a fit to be eligible.
    metric : "euclidean" (paper) or "sqeuclidean"; see the module docstring.
    lr, max_iter, n_lr_decays, patience, tol : Adam schedule and early stopping.
    pair_sample : int, random partners per neuron per step when the Euclidean pairwise term is too
        large to take over all pairs.
    init_temperature : float, starting T.
    refine_iter : int, steps of the Eq. 3 polish of the chosen angles (0: none).
    device : torch device; None -> "cuda" if available else "cpu".
    random_state : int, seeds pair sampling.
    progress : bool, tqdm bar over betas.

    Attributes
    ----------
    angles_ : (N,) radians in [0, 2*pi), chosen fit. ``transform`` rotates by them.
    temperature_, beta_ : T and beta of the chosen fit.
    losses_ : structured array (n_betas,), fields beta, temperature, eq3, eq5 (means per pair,
        Eq. 5 = mean pairwise distance + beta * mean reconstruction error) and n_iter (Adam steps).
    all_angles_ : (n_betas, N) angles of every fit, before the polish.
    eq3_ : float, Eq. 3 loss (mean per pair) of ``angles_``.

    Small problems run several times faster with ``torch.set_num_threads(1)``.
    """

    def __init__(
        self,
        betas=DEFAULT_BETAS,
        min_temperature=5.0,
        metric="euclidean",
        lr=0.01,
        max_iter=2000,
        n_lr_decays=3,
        patience=50,
        tol=1e-4,
        pair_sample=4,
        init_temperature=1.0,
        refine_iter=500,
        device=None,
        random_state=0,
        progress=True,
    ):
        self.betas = betas
        self.min_temperature = min_temperature
        self.metric = metric
        self.lr = lr
        self.max_iter = max_iter
        self.n_lr_decays = n_lr_decays
        self.patience = patience
        self.tol = tol
        self.pair_sample = pair_sample
        self.init_temperature = init_temperature
        self.refine_iter = refine_iter
        self.device = device
        self.random_state = random_state
        self.progress = progress

    def _device(self):
        if self.device is not None:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def fit(self, barcodes, orientations=None, order=None):
        """Fit angles. barcodes: (N, F, O), or flat (N, F*O) with ``orientations`` and the
        channel ``order`` (see :func:`clustering.rotation.as_barcodes`). Returns self."""
        x = torch.as_tensor(
            np.asarray(as_barcodes(barcodes, orientations, order)),
            dtype=torch.float32,
            device=self._device(),
        )
        if x.shape[0] < 2:
            raise ValueError(f"need at least 2 bar codes, got shape {tuple(x.shape)}")
        n, k = x.shape[0], x.shape[1] * x.shape[2]
        generator = torch.Generator().manual_seed(self.random_state)
        exact_train = self.metric == "sqeuclidean" or n * (n - 1) // 2 * k <= _MAX_EXACT_ELEMENTS
        eval_pairs = None
        if self.metric == "euclidean" and n * (n - 1) // 2 > _MAX_EVAL_PAIRS:
            eval_pairs = _random_pairs(n, math.ceil(_N_EVAL_PAIRS / n), generator, x.device)
        alpha0 = energy_angles(x)
        rows, all_angles = [], []
        for beta in tqdm(list(self.betas), desc="beta", disable=not self.progress):
            alpha, temperature, n_iter = self._fit_one(
                x, float(beta), alpha0, exact_train, generator
            )
            with torch.no_grad():
                eq3 = _eval_pairwise_mean(rotate(x, alpha).reshape(n, -1), self.metric, eval_pairs)
                relaxed = relaxed_rotate(x, alpha, temperature).reshape(n, -1)
                eq5 = _eval_pairwise_mean(relaxed, self.metric, eval_pairs) + float(beta) * float(
                    self._reconstruction(x, torch.tensor(temperature))
                )
            rows.append((float(beta), temperature, eq3, eq5, n_iter))
            all_angles.append(alpha)
        self.losses_ = np.array(rows, dtype=LOSS_DTYPE)
        best = select_fit(self.losses_["temperature"], self.losses_["eq3"], self.min_temperature)
        self.all_angles_ = torch.stack(all_angles).cpu().numpy().astype(np.float64)
        angles = all_angles[best]
        if self.refine_iter:
            angles = self._refine(x, angles, exact_train, generator)
        with torch.no_grad():
            self.eq3_ = _eval_pairwise_mean(
                rotate(x, angles).reshape(n, -1), self.metric, eval_pairs
            )
        self.angles_ = np.remainder(angles.cpu().numpy().astype(np.float64), 2 * math.pi)
        self.temperature_ = float(self.losses_["temperature"][best])
        self.beta_ = float(self.losses_["beta"][best])
        return self

    def _reconstruction(self, x, temperature):
        """Mean over neurons of ||S~_0 r - r|| (squared for ``sqeuclidean``). x: (N, F, O)."""
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        diff = (relaxed_rotate(x, zero, temperature.to(x.device, x.dtype)) - x).reshape(
            x.shape[0], -1
        )
        sq = (diff * diff).sum(-1)
        return sq.mean() if self.metric == "sqeuclidean" else torch.sqrt(sq + _EPS).mean()

    def _fit_one(self, x, beta, alpha0, exact_train, generator):
        """Minimise Eq. 5 (relaxed rotation) for one beta. Returns (alpha (N,), T, n_iter)."""
        n = x.shape[0]
        alpha = alpha0.clone().requires_grad_(True)
        log_t = torch.tensor(math.log(self.init_temperature), device=x.device, requires_grad=True)
        pair_fn = self._pair_fn(n, exact_train, generator, x.device)

        def loss_fn():
            temperature = log_t.exp()
            rotated = relaxed_rotate(x, alpha, temperature).reshape(n, -1)
            return pairwise_mean(rotated, self.metric, pair_fn()) + beta * self._reconstruction(
                x, temperature
            )

        n_iter = self._minimise([alpha, log_t], loss_fn, stochastic=not exact_train)
        return torch.remainder(alpha.detach(), 2 * math.pi), float(log_t.detach().exp()), n_iter

    def _refine(self, x, alpha0, exact_train, generator):
        """Minimise Eq. 3 (exact rotation, Eq. 2) over the angles from alpha0 (N,). Returns (N,)."""
        n = x.shape[0]
        alpha = alpha0.clone().requires_grad_(True)
        pair_fn = self._pair_fn(n, exact_train, generator, x.device)
        self._minimise(
            [alpha],
            lambda: pairwise_mean(rotate(x, alpha).reshape(n, -1), self.metric, pair_fn()),
            stochastic=not exact_train,
            max_iter=self.refine_iter,
        )
        return torch.remainder(alpha.detach(), 2 * math.pi)

    def _pair_fn(self, n, exact_train, generator, device):
        """Callable giving the pairs of one step for :func:`pairwise_mean`: None (all pairs, or
        the squared metric's closed form) or fresh random pairs."""
        if self.metric == "sqeuclidean" or exact_train:
            return lambda: None
        return lambda: _random_rounds(n, self.pair_sample, generator, device)

    def _minimise(self, params, loss_fn, stochastic, max_iter=None):
        """Adam on ``loss_fn()`` with early stopping and ``n_lr_decays`` decays by 10.

        On each plateau (no relative improvement > tol for ``patience`` steps of the loss, smoothed
        by an exponential moving average when ``stochastic``) the best parameters so far are
        restored and the learning rate divided by 10; after the last decay's plateau it stops.
        Leaves the best parameters in ``params``; returns the number of steps taken.
        """
        opt = torch.optim.Adam(params, lr=self.lr)
        best, best_state, since, decays, smooth = math.inf, None, 0, 0, None
        step = 0
        for step in range(1, (max_iter or self.max_iter) + 1):  # noqa: B007 (returned)
            loss = loss_fn()
            value = float(loss.detach())
            smooth = value if not stochastic or smooth is None else 0.9 * smooth + 0.1 * value
            improved = best_state is None or smooth < best - self.tol * abs(best)
            if improved:  # the state that produced this loss, before the step
                best, best_state, since = smooth, [p.detach().clone() for p in params], 0
            opt.zero_grad()
            loss.backward()
            opt.step()
            since = 0 if improved else since + 1
            if since >= self.patience:
                if decays == self.n_lr_decays:
                    break
                decays, since = decays + 1, 0
                for group in opt.param_groups:
                    group["lr"] *= 0.1
                self._restore(params, best_state)
        self._restore(params, best_state)
        return step

    @staticmethod
    @torch.no_grad()
    def _restore(params, state):
        for p, s in zip(params, state):
            p.copy_(s)

    def transform(self, barcodes, orientations=None, order=None):
        """Exact rotation (Eq. 2) by ``angles_``. barcodes as for :meth:`fit`; returns
        (N, F, O), same kind."""
        x = as_barcodes(barcodes, orientations, order)
        if x.shape[0] != self.angles_.shape[0]:
            raise ValueError(f"fitted on {self.angles_.shape[0]} bar codes, got {x.shape[0]}")
        angles = self.angles_ if not isinstance(x, torch.Tensor) else torch.as_tensor(self.angles_)
        return rotate(x, angles)

    def fit_transform(self, barcodes, orientations=None, order=None):
        """fit then transform; barcodes as for :meth:`fit` -> (N, F, O)."""
        return self.fit(barcodes, orientations, order).transform(barcodes, orientations, order)
