"""Per-neuron Poisson GLM on image pixels: the linear baseline of the non-linearity index.

rate_n(x) = exp(w_n . x + b_n), x = the standardized image average-pooled by `downsample`.
Each neuron's weights minimise the Poisson negative log-likelihood summed over training
trials plus (alpha_n / 2) * ||w_n||^2. alpha_n is chosen per neuron among `alphas` by the
Poisson likelihood on the validation tier, then the model is refitted on train + validation
with that alpha. The paper cross-validates 48 log-spaced values in [0.1, 5] in its own
scaling; with this objective (summed over trials, standardized pixels) simulated V1 neurons
with ~1000 trials choose alphas between ~30 and 1e4, hence the default grid. All neurons
(and all alphas) are fitted at once by full-batch L-BFGS in torch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .data import ScanData

ALPHAS = tuple(np.geomspace(10.0, 1e4, 7))  # default ridge strengths, log-spaced

__all__ = ["PoissonGLM"]


class PoissonGLM:
    """Scikit-learn style Poisson GLM with log link, one per neuron.

    Args:
        alphas: candidate L2 strengths (A,).
        downsample: average-pooling factor applied to the (H, W) images.
        max_iter: L-BFGS iterations per fit.
        max_elements: bound on A * T * (neurons fitted together), the size of one
            float64 activation tensor; neurons are fitted in chunks below it.

    Fitted attributes: coef_ (N, H//downsample, W//downsample), intercept_ (N,),
    alpha_ (N,), validation_nll_ (A, N) mean per validation trial, input_mean_/input_std_
    (raw units, from train-tier pixels).
    """

    def __init__(
        self,
        alphas=ALPHAS,
        downsample: int = 4,
        max_iter: int = 100,
        max_elements: int = 10_000_000,
    ):
        self.alphas = np.asarray(alphas, dtype=np.float64)
        self.downsample = downsample
        self.max_iter = max_iter
        self.max_elements = max_elements

    def _features(self, images) -> torch.Tensor:
        """Raw images (T, 1, H, W) -> (T, D) float64 standardized pooled pixels."""
        x = torch.as_tensor(np.asarray(images, dtype=np.float64))
        x = (x - self.input_mean_) / self.input_std_
        return F.avg_pool2d(x, self.downsample).flatten(1)

    def _fit(self, x: torch.Tensor, y: torch.Tensor, alphas: torch.Tensor):
        """Minimise per problem; alphas (A, N) -> weights (A, D, N), intercepts (A, N)."""
        a, n = alphas.shape
        w = torch.zeros(a, x.shape[1], n, dtype=torch.float64, requires_grad=True)
        b = torch.log(y.mean(0).clamp_min(1e-3)).repeat(a, 1).requires_grad_(True)
        opt = torch.optim.LBFGS(
            [w, b],
            max_iter=self.max_iter,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-9,
            tolerance_change=1e-12,
            history_size=20,
        )

        def closure():
            opt.zero_grad()
            eta = (torch.einsum("td,adn->atn", x, w) + b[:, None]).clamp(max=30)
            loss = (torch.exp(eta) - y * eta).sum() + 0.5 * (alphas * w.pow(2).sum(1)).sum()
            loss = loss / len(x)
            loss.backward()
            return loss

        opt.step(closure)
        return w.detach(), b.detach()

    def fit(self, scan: ScanData) -> PoissonGLM:
        """Fit on `scan`'s train tier, choose alpha on its validation tier, refit on both."""
        train, val = scan.mask("train"), scan.mask("validation")
        if not train.any() or not val.any():
            raise ValueError(f"scan {scan.name!r} needs train and validation trials for the GLM")
        pixels = scan.images[train].astype(np.float64)
        self.input_mean_, self.input_std_ = float(pixels.mean()), float(max(pixels.std(), 1e-6))
        x = self._features(scan.images)
        y = torch.as_tensor(scan.responses, dtype=torch.float64)
        tr, va, both = (torch.as_tensor(m) for m in (train, val, train | val))
        alphas = torch.as_tensor(self.alphas)
        coef, intercept, chosen, nll = [], [], [], []
        chunk = max(1, self.max_elements // (len(alphas) * len(y)))
        for s in range(0, y.shape[1], chunk):
            yc = y[:, s : s + chunk]
            grid = alphas[:, None].expand(-1, yc.shape[1])
            w, b = self._fit(x[tr], yc[tr], grid)
            eta = torch.einsum("td,adn->atn", x[va], w) + b[:, None]
            val_nll = (torch.exp(eta) - yc[va] * eta).mean(1)  # (A, n)
            best = alphas[val_nll.argmin(0)]
            w, b = self._fit(x[both], yc[both], best[None])
            coef.append(w[0].T), intercept.append(b[0]), chosen.append(best), nll.append(val_nll)
        h, w_ = (d // self.downsample for d in scan.image_shape)
        self.coef_ = torch.cat(coef).reshape(-1, h, w_).numpy()
        self.intercept_ = torch.cat(intercept).numpy()
        self.alpha_ = torch.cat(chosen).numpy()
        self.validation_nll_ = torch.cat(nll, dim=1).numpy()
        return self

    def predict(self, images) -> np.ndarray:
        """Rates (T, N) for RAW images (T, 1, H, W) in the units of `ScanData.images`."""
        x = self._features(images)
        eta = x @ torch.as_tensor(self.coef_).flatten(1).T + torch.as_tensor(self.intercept_)
        return torch.exp(eta).numpy()
