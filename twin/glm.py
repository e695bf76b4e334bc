"""Per-neuron Poisson GLM on image pixels: the linear baseline of the non-linearity index.

rate_n(x) = exp(w_n . x + b_n), x = the standardized image average-pooled by `downsample`, which
must be the twin's own input pooling (``Twin.downsample``): a GLM that sees a coarser image than
the twin cannot represent high-spatial-frequency linear filters, and the non-linearity index
(DT Eq. 18) would then measure resolution instead of non-linearity.

Penalty (DT Methods, "GLM model"): each neuron minimises

    (1 / T) sum_t [exp(eta_t) - y_t eta_t]  +  (alpha_n / 2) ||w_n||^2,     eta = X w + b,

the mean Poisson negative log-likelihood over its T training trials plus an L2 penalty, with
alpha_n chosen per neuron among DT's 48 log-spaced values in [0.1, 5] by the Poisson likelihood
on the validation tier; the model is then refitted on train + validation with that alpha.
Scaling: alpha multiplies the *per-trial* loss (scikit-learn's PoissonRegressor convention), so
the grid does not depend on the number of trials; in the summed-over-trials form it is T x alpha.

Solver (all neurons at once, no loop over neurons): features are centred and rotated into the
eigenbasis of their training covariance C = V diag(lambda) V^T (an orthogonal change of variables:
the L2 penalty is unchanged). There the Hessian of neuron n is close to m_n diag(lambda) + alpha
(m_n its mean rate), which preconditions a damped Newton iteration (step sizes 1, 1/2, ... 1/16
tried per neuron) to convergence. The 48 alphas are walked from the strongest to the weakest,
each fit warm-started from the previous one, so each takes a few iterations. Cost per iteration:
two (T x D) @ (D x N) products, D = pixels after pooling.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .data import ScanData

__all__ = ["PoissonGLM", "DT_ALPHAS"]

#: DT's penalty grid: 48 log-spaced values in [0.1, 5] (per-trial loss; see the module docstring).
DT_ALPHAS = tuple(np.geomspace(0.1, 5.0, 48))
_STEPS = torch.tensor([1.0, 0.5, 0.25, 0.125, 0.0625], dtype=torch.float64)


def _loss(eta, y, z, alpha):
    """Per-neuron objective (..., N): mean Poisson NLL over trials + alpha / 2 ||z||^2."""
    return (torch.exp(eta) - y * eta).mean(-2) + 0.5 * alpha * z.pow(2).sum(-2)


def _newton(xt, y, lam, alpha, z, b, max_iter: int, tol: float):
    """Minimise the objective for every neuron from (z, b): xt (T, D) centred rotated features,
    y (T, N), lam (D,), alpha (N,), z (D, N), b (N,) -> (z, b, iterations)."""
    eta = (xt @ z + b).clamp(max=30)
    for it in range(1, max_iter + 1):
        mu = torch.exp(eta)
        r = mu - y
        gz = xt.T @ r / len(y) + alpha * z
        gb = r.mean(0)
        m = mu.mean(0).clamp_min(1e-6)
        dz = gz / (m * lam[:, None] + alpha)
        db = gb / m
        decrement = (gz * dz).sum(0) + gb * db  # (N,) Newton decrement of the approximate model
        if float(decrement.max()) < tol:
            return z, b, it - 1
        deta = xt @ dz + db
        s = _STEPS[:, None, None]
        trial = (eta - s * deta).clamp(max=30)  # (S, T, N)
        f = _loss(trial, y, z - s * dz, alpha)  # (S, N)
        f0 = _loss(eta, y, z, alpha)
        k = f.argmin(0)
        step = torch.where(f.gather(0, k[None])[0] < f0, _STEPS[k], torch.zeros_like(f0))
        z, b = z - step * dz, b - step * db
        eta = (eta - step * deta).clamp(max=30)
    return z, b, max_iter


class PoissonGLM:
    """Scikit-learn style Poisson GLM with log link, one per neuron.

    Args:
        downsample: average-pooling factor applied to the (H, W) images: the twin's
            ``downsample`` (its input resolution).
        alphas: candidate L2 strengths (A,) of the per-trial loss (default DT's 48).
        max_iter: Newton iterations per alpha; tol: stop when every neuron's Newton decrement
            (the predicted decrease of the per-trial objective) is below it. With warm starts
            along the 48 alphas, 5 per alpha predict as well as 15 (benchmarks in docs).
        max_elements: bound on T * (neurons fitted together); neurons are fitted in chunks.

    Fitted attributes: coef_ (N, H//downsample, W//downsample), intercept_ (N,),
    alpha_ (N,), validation_nll_ (A, N) mean per validation trial, iterations_ (total Newton
    iterations, all alphas and chunks), input_mean_/input_std_ (raw units, train-tier pixels).
    """

    def __init__(
        self,
        downsample: int,
        alphas=DT_ALPHAS,
        max_iter: int = 5,
        tol: float = 1e-5,
        max_elements: int = 5_000_000,
    ):
        self.alphas = np.sort(np.asarray(alphas, dtype=np.float64))[::-1].copy()
        self.downsample = int(downsample)
        self.max_iter = max_iter
        self.tol = tol
        self.max_elements = max_elements

    def _features(self, images) -> torch.Tensor:
        """Raw images (T, 1, H, W) -> (T, D) float64 standardized pooled pixels."""
        x = torch.as_tensor(np.asarray(images, dtype=np.float64))
        x = (x - self.input_mean_) / self.input_std_
        if self.downsample > 1:
            x = F.avg_pool2d(x, self.downsample)
        return x.flatten(1)

    def fit(self, scan: ScanData) -> PoissonGLM:
        """Fit on `scan`'s train tier, choose alpha on its validation tier, refit on both."""
        train, val = scan.mask("train"), scan.mask("validation")
        if not train.any() or not val.any():
            raise ValueError(f"scan {scan.name!r} needs train and validation trials for the GLM")
        if any(s % self.downsample for s in scan.image_shape):
            raise ValueError(
                f"scan {scan.name!r}: downsample={self.downsample} does not divide the image "
                f"shape {scan.image_shape}"
            )
        pixels = scan.images[train].astype(np.float64)
        self.input_mean_, self.input_std_ = float(pixels.mean()), float(max(pixels.std(), 1e-6))
        x = self._features(scan.images)
        y = torch.as_tensor(scan.responses, dtype=torch.float64)
        tr, va, both = (torch.as_tensor(m) for m in (train, val, train | val))
        centre = x[tr].mean(0)
        lam, v = torch.linalg.eigh(torch.cov(x[tr].T, correction=0).reshape(x.shape[1], -1))
        lam = lam.clamp_min(0)
        xt = (x - centre) @ v  # (T_all, D)
        alphas = torch.as_tensor(self.alphas)
        coef, intercept, chosen, nll = [], [], [], []
        self.iterations_ = 0
        chunk = max(1, self.max_elements // len(y))
        for s in range(0, y.shape[1], chunk):
            yc = y[:, s : s + chunk]
            z, b, best, val_nll = self._path(xt[tr], yc[tr], xt[va], yc[va], lam, alphas)
            z, b, it = _newton(xt[both], yc[both], lam, best, z, b, self.max_iter, self.tol)
            self.iterations_ += it
            w = v @ z  # (D, n) back to pixels
            coef.append(w.T), intercept.append(b - centre @ w), chosen.append(best)
            nll.append(val_nll)
        h, w_ = (d // self.downsample for d in scan.image_shape)
        self.coef_ = torch.cat(coef).reshape(-1, h, w_).numpy()
        self.intercept_ = torch.cat(intercept).numpy()
        self.alpha_ = torch.cat(chosen).numpy()
        self.validation_nll_ = torch.cat(nll, dim=1).numpy()[::-1].copy()  # ascending alphas
        return self

    def _path(self, xtr, ytr, xva, yva, lam, alphas):
        """Walk alphas (descending) with warm starts; each neuron keeps its best validation fit.

        Returns z (D, n), b (n,) of the best fits, the chosen alphas (n,), val NLL (A, n)."""
        n = ytr.shape[1]
        z = torch.zeros(xtr.shape[1], n, dtype=torch.float64)
        b = torch.log(ytr.mean(0).clamp_min(1e-3))
        best_z, best_b = z.clone(), b.clone()
        best = torch.full((n,), float(alphas[0]), dtype=torch.float64)
        nlls = []
        for alpha in alphas:
            a = torch.full((n,), float(alpha), dtype=torch.float64)
            z, b, it = _newton(xtr, ytr, lam, a, z, b, self.max_iter, self.tol)
            self.iterations_ += it
            eta = (xva @ z + b).clamp(max=30)
            nll = (torch.exp(eta) - yva * eta).mean(0)
            better = nll < (torch.stack(nlls).min(0).values if nlls else torch.inf)
            best_z[:, better], best_b[better], best[better] = z[:, better], b[better], alpha
            nlls.append(nll)
        return best_z, best_b, best, torch.stack(nlls)

    def predict(self, images) -> np.ndarray:
        """Rates (T, N) for RAW images (T, 1, H, W) in the units of `ScanData.images`."""
        x = self._features(images)
        eta = x @ torch.as_tensor(self.coef_).flatten(1).T + torch.as_tensor(self.intercept_)
        return torch.exp(eta).numpy()
