"""Most exciting inputs (MEIs) by gradient ascent under an L2-norm constraint, batched over neurons.

DT Eq. 3 with the regulariser replaced by a hard constraint: maximise f_n(x) subject to
||x||_2 = norm (``constraint="sphere"``) or <= norm (``"ball"``). One image per neuron, all in the
same batch; the objective is sum_n f_n(x_n), so every image only receives the gradient of its own
neuron and the batch is exactly as good as one optimisation per neuron (the update is per image:
each image's gradient is normalised by its own L2 norm). Options: Gaussian smoothing of the
gradient (``smooth_sigma``, pixels) and random jitter (the batch is rolled by a random integer
shift of at most ``jitter`` pixels before each evaluation; the same shift for every image, drawn
from a generator that does not depend on the batch, so batched and one-at-a-time runs agree).

Images whose gradient vanishes for 3 steps in a row (a rectified neuron that is silent for its
current image) are re-drawn from noise, during the first half of the steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import trange

from .model import RespondOwnFn, image_shape, model_device, own_responses, pixels_per_degree

#: Default L2 norm of an MEI, standardized units x degrees (pixels: this x pixels per degree,
#: :mod:`insilico.units`): 10 on the 36 x 64 canvas at its default 0.305 px / deg.
NORM_DEG = 33.0


@dataclass
class MEIResult:
    """images (N,1,H,W) on the constraint; responses (N,) of each neuron to its own image;
    history (steps,) mean response per step; neurons (N,) the model's neuron indices."""

    images: torch.Tensor
    responses: torch.Tensor
    history: np.ndarray
    neurons: np.ndarray


def _gauss_kernel(sigma: float, device) -> torch.Tensor:
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def smooth(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (s.d. ``sigma`` px, zero padding) of (M,1,H,W)."""
    k = _gauss_kernel(sigma, images.device)
    r = (len(k) - 1) // 2
    out = F.conv2d(images, k.view(1, 1, -1, 1), padding=(r, 0))
    return F.conv2d(out, k.view(1, 1, 1, -1), padding=(0, r))


def project(images: torch.Tensor, norm: float, constraint: str = "sphere") -> torch.Tensor:
    """Per-image projection onto the L2 sphere (||x|| = norm) or ball (||x|| <= norm)."""
    n = images.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    if constraint == "sphere":
        return images * (norm / n)
    if constraint == "ball":
        return images * torch.clamp(norm / n, max=1.0)
    raise ValueError(f"constraint must be 'sphere' or 'ball'; got {constraint!r}")


def _canvas_and_norm(model, init, norm) -> tuple[int, int, float]:
    """(H, W) from the model (else from init) and the norm (default from the model's ppd)."""
    if model is not None:
        height, width = image_shape(model)
    elif init is not None:
        height, width = (int(s) for s in init.shape[-2:])
    else:
        raise ValueError("mei with respond_own alone needs init= (K, 1, H, W): it names the canvas")
    if norm is None:
        if model is None:
            raise ValueError("mei with respond_own alone needs norm= (L2 norm, canvas pixels)")
        norm = NORM_DEG * pixels_per_degree(model)
    return height, width, float(norm)


def mei(
    model=None,
    neurons: Sequence[int] | None = None,
    *,
    respond_own: RespondOwnFn | None = None,
    norm: float | None = None,
    constraint: str = "sphere",
    steps: int = 200,
    lr: float = 0.1,
    smooth_sigma: float | None = None,
    jitter: int = 0,
    init: torch.Tensor | None = None,
    seed: int = 0,
    device=None,
    progress: bool = False,
) -> MEIResult:
    """MEIs of many neurons at once: one image per neuron, one batch.

    model: ResponseModel (``model(x (K,1,H,W)) -> (K, N_all)``); image k is scored by neuron
        ``neurons[k]`` (default: all neurons of the model, N_all = len(model.rf_positions)).
    respond_own: alternatively / for efficiency, ``respond_own(images (K,1,H,W)) -> (K,)`` giving
        neuron k's response to image k (e.g. the twin evaluating only the readout of neuron k).
    norm, constraint: L2 norm of each MEI (standardized units over the whole canvas; default
        ``NORM_DEG`` x the model's pixels per degree), 'sphere' (= norm) or 'ball' (<= norm).
    steps, lr: projected, per-image normalised gradient ascent:
        x <- P(x + lr_t * norm * g / ||g||), lr_t decaying from lr to lr / 10 (cosine).
    smooth_sigma: Gaussian blur of the gradient (pixels); jitter: max random shift (pixels).
    init: (K,1,H,W) starting images (default white noise from ``seed``), projected first.
    The canvas (H, W) is the model's ``image_shape`` (with respond_own alone: init's).
    progress: a tqdm bar over the steps.

    Returns :class:`MEIResult`. Never loops over neurons: loops over steps only.
    """
    if respond_own is None:
        if model is None:
            raise ValueError("mei needs a model or respond_own")
        if neurons is None:
            pos = getattr(model, "rf_positions", None)
            if pos is None:
                raise ValueError("mei: pass neurons= (the model has no rf_positions to count them)")
            neurons = np.arange(len(pos))
        idx = torch.as_tensor(np.asarray(neurons), dtype=torch.long)
        device = device or model_device(model)
        idx = idx.to(device)

        def respond_own(x):
            return own_responses(model, x, idx)
    else:
        if init is None and neurons is None:
            raise ValueError(
                "mei with respond_own needs init= or neurons= (to know how many images)"
            )
        device = device or (init.device if init is not None else torch.device("cpu"))
    height, width, norm = _canvas_and_norm(model, init, norm)
    k = len(init) if init is not None else len(neurons)
    gen = torch.Generator().manual_seed(seed)
    regen = torch.Generator().manual_seed(seed + 1)
    if init is None:
        x = project(torch.randn(k, 1, height, width, generator=gen).to(device), norm, "sphere")
    else:
        x = torch.as_tensor(init, dtype=torch.float32).to(device).clone()
        if tuple(x.shape[1:]) != (1, height, width):
            raise ValueError(f"init must be (K, 1, {height}, {width}); got {tuple(x.shape)}")
        x = project(x, norm, constraint)
    jgen = torch.Generator().manual_seed(seed + 2)
    history = np.zeros(steps)
    dead_for = torch.zeros(k, dtype=torch.long, device=device)
    bar = trange(steps, desc=f"MEI of {k} neurons", unit="step", disable=not progress, leave=False)
    for t in bar:
        x = x.detach().requires_grad_(True)
        if jitter > 0:
            sh = torch.randint(-jitter, jitter + 1, (2,), generator=jgen).tolist()
            xin = torch.roll(x, shifts=(sh[0], sh[1]), dims=(2, 3))
        else:
            xin = x
        r = respond_own(xin)
        (g,) = torch.autograd.grad(r.sum(), x)
        history[t] = float(r.detach().mean())
        with torch.no_grad():
            if smooth_sigma:
                g = smooth(g, smooth_sigma)
            gn = g.flatten(1).norm(dim=1)
            dead = gn <= 1e-12
            step = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / max(1, steps - 1))))
            x = x + step * norm * g / gn.clamp_min(1e-12).view(-1, 1, 1, 1)
            dead_for = torch.where(dead, dead_for + 1, torch.zeros_like(dead_for))
            redraw = dead_for >= 3
            if bool(redraw.any()) and t < steps // 2:
                fresh = torch.randn(int(redraw.sum()), 1, height, width, generator=regen).to(device)
                x[redraw] = project(fresh, norm, "sphere")
                dead_for[redraw] = 0
            x = project(x, norm, constraint)
    x = x.detach()
    with torch.no_grad():
        final = respond_own(x).detach()
    nidx = np.asarray(neurons) if neurons is not None else np.arange(k)
    return MEIResult(images=x, responses=final, history=history, neurons=nidx)
