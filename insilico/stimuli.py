"""Parametric stimuli for in-silico experiments: Gabors, DoGs, plaids (DT Eq. 1-2, 9-10).

All functions are batched in torch: every parameter is a float or a tensor that broadcasts to a
common shape ``(B,)`` (a 0-d value counts as ``B = 1``); the result is ``(B, 1, H, W)`` float32 on
the parameters' device (or ``device=`` if given). There is no Python loop over stimuli.

Conventions (shared by the whole project)
-----------------------------------------
* Canvas: ``height`` H rows x ``width`` W columns, always given (the response model's
  ``image_shape``); pixel ``(row i, column j)``, pixel centres at integers.
* Positions: ``x`` = column, ``y`` = row, in pixels (the canvas centre,
  :func:`insilico.model.canvas_center`, is ``((W-1)/2, (H-1)/2)``, e.g. (31.5, 17.5) on 36 x 64).
* Values are in STANDARDIZED units (0 = mean gray, 1 = one std of natural-image pixels).
* Angles in radians, spatial frequency ``sf`` in cycles/pixel.

Gabor (DT Eq. 1-2), written with our position convention::

    (di, dj)   = (i - y, j - x)                         # offset in (row, column)
    (i', j')   = (di, dj) R(phi)^T,  R(phi) = [[cos, -sin], [sin, cos]]
               i.e.  i' = di cos(phi) - dj sin(phi),   j' = di sin(phi) + dj cos(phi)
    G[i, j]    = a/2 * exp(-1/2 * (i'^2 + j'^2) / (sigma^2 / 4)) * cos(2 pi nu i' + tau)

* ``size`` is the paper's ``sigma``: the envelope is a Gaussian of standard deviation
  ``sigma / 2`` pixels (Eq. 1 divides by ``sigma^2 / 4``). ``contrast`` ``a`` is twice the peak
  amplitude: at the centre and phase 0 the value is ``a / 2``.
* ``orientation = 0``: the carrier varies along the rows only (``i' = i - y``): the stripes are
  HORIZONTAL (constant along each row) and the wave vector points down the image (+y).
  ``orientation = pi/2``: ``i' = -(j - x)``: VERTICAL stripes, the wave vector points to -x.
  Increasing ``phi`` turns the pattern clockwise as displayed (row 0 at the top); exactly,
  ``gabor(phi + pi/2)[y + a, x + b] == gabor(phi)[y - b, x + a]``. Orientation has period ``pi``
  up to the phase sign: ``gabor(phi + pi, tau) == gabor(phi, -tau)``.
* ``phase = 0``: even-symmetric, bright centre stripe for ``a > 0``; ``phase = pi`` negates.

DoG (DT Eq. 9-10), centre and surround at the same position::

    g(sigma)[i, j] = exp(-((i - y)^2 + (j - x)^2) / (2 sigma^2))     (sigma = Gaussian std, px)
    D = a_cen [(1 + a_sur) g(sigma_cen) - a_sur g(sigma_sur)]

  so a negative ``a_cen`` negates the whole profile: an OFF centre with an antagonistic (ON)
  surround, and the peak value is ``a_cen`` for every ``a_sur``.

Plaid (DT "Plaid stimuli"): the Gabor plus the orthogonal Gabor (``orientation + pi/2``, same
position, size, sf and phase) at ``orthogonal_contrast``, superimposed (summed).

``grating_grid`` builds Cartesian products of parameter values for such experiments.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = [
    "gabor",
    "gabor_radius",
    "dog",
    "plaid",
    "grating_grid",
    "broadcast_params",
]


def _first_device(values) -> torch.device:
    for v in values:
        if isinstance(v, torch.Tensor):
            return v.device
    return torch.device("cpu")


def broadcast_params(*values: Any, device=None) -> tuple[torch.Tensor, ...]:
    """Convert floats / tensors to float32 tensors of one common shape ``(B,)``.

    Each value must broadcast (torch rules) with the others; the result is flattened to 1-D.
    Tensors keep their device; floats go to the first tensor's device (or ``device``).
    """
    dev = torch.device(device) if device is not None else _first_device(values)
    ts = []
    for k, v in enumerate(values):
        t = torch.as_tensor(v, dtype=torch.float32, device=dev)
        if t.dim() > 1:
            raise ValueError(
                f"stimulus parameter #{k} has shape {tuple(t.shape)}; expected a "
                "scalar or a 1-D tensor of shape (B,)"
            )
        ts.append(t.to(dev))
    try:
        out = torch.broadcast_tensors(*ts)
    except RuntimeError as e:
        shapes = [tuple(t.shape) for t in ts]
        raise ValueError(
            f"stimulus parameters do not broadcast to one (B,): shapes {shapes}"
        ) from e
    return tuple(t.reshape(-1).contiguous() for t in out)


def _grid(height: int, width: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column index grids of shape (1, H, W), float32."""
    i = torch.arange(height, dtype=torch.float32, device=device).view(1, height, 1)
    j = torch.arange(width, dtype=torch.float32, device=device).view(1, 1, width)
    return i, j


def gabor(
    x,
    y,
    size,
    sf,
    contrast,
    orientation,
    phase,
    height: int,
    width: int,
    device=None,
) -> torch.Tensor:
    """Gabor patches, DT Eq. 1-2 (see the module docstring for the exact convention).

    Parameters (floats or tensors broadcasting to ``(B,)``)
        x, y: centre, column and row in pixels. size: the paper's sigma (envelope std = size/2).
        sf: spatial frequency nu, cycles/pixel. contrast: a (peak value a/2).
        orientation: phi, radians (0 = horizontal stripes). phase: tau, radians (0 = even).
    Returns ``(B, 1, height, width)`` float32.
    """
    x, y, size, sf, contrast, orientation, phase = broadcast_params(
        x, y, size, sf, contrast, orientation, phase, device=device
    )
    i, j = _grid(height, width, x.device)
    di = i - y.view(-1, 1, 1)
    dj = j - x.view(-1, 1, 1)
    c = torch.cos(orientation).view(-1, 1, 1)
    s = torch.sin(orientation).view(-1, 1, 1)
    ip = di * c - dj * s
    jp = di * s + dj * c
    var = (size.view(-1, 1, 1) ** 2) / 4.0
    env = torch.exp(-0.5 * (ip**2 + jp**2) / var)
    carrier = torch.cos(2.0 * math.pi * sf.view(-1, 1, 1) * ip + phase.view(-1, 1, 1))
    out = 0.5 * contrast.view(-1, 1, 1) * env * carrier
    return out.unsqueeze(1)


def gabor_radius(size: float) -> float:
    """Radius (px) of a Gabor of ``size`` sigma: 3 envelope standard deviations (``1.5 * size``),
    beyond which the envelope is below 1.1 % of its peak."""
    return 1.5 * float(size)


def gaussian(x, y, sigma, height: int, width: int, device=None) -> torch.Tensor:
    """Unnormalised Gaussian g(r, sigma) of DT Eq. 10 (peak 1, std sigma px): (B, 1, H, W)."""
    x, y, sigma = broadcast_params(x, y, sigma, device=device)
    i, j = _grid(height, width, x.device)
    r2 = (i - y.view(-1, 1, 1)) ** 2 + (j - x.view(-1, 1, 1)) ** 2
    return torch.exp(-r2 / (2.0 * sigma.view(-1, 1, 1) ** 2)).unsqueeze(1)


def dog(
    x,
    y,
    sigma_center,
    sigma_surround,
    a_center,
    a_surround,
    height: int,
    width: int,
    device=None,
) -> torch.Tensor:
    """Difference of Gaussians, DT Eq. 9-10, centre and surround at the same position (x, y).

    ``a_center * [(1 + a_surround) * g(sigma_center) - a_surround * g(sigma_surround)]`` where g
    is an unnormalised Gaussian with standard deviation sigma (pixels): a_center < 0 is an OFF
    centre with an ON surround. Returns (B, 1, H, W) float32.
    """
    x, y, sc, ss, ac, asur = broadcast_params(
        x, y, sigma_center, sigma_surround, a_center, a_surround, device=device
    )
    i, j = _grid(height, width, x.device)
    r2 = (i - y.view(-1, 1, 1)) ** 2 + (j - x.view(-1, 1, 1)) ** 2
    gc = torch.exp(-r2 / (2.0 * sc.view(-1, 1, 1) ** 2))
    gs = torch.exp(-r2 / (2.0 * ss.view(-1, 1, 1) ** 2))
    asur = asur.view(-1, 1, 1)
    out = ac.view(-1, 1, 1) * ((1.0 + asur) * gc - asur * gs)
    return out.unsqueeze(1)


def plaid(
    x,
    y,
    size,
    sf,
    contrast,
    orientation,
    phase,
    orthogonal_contrast,
    height: int,
    width: int,
    device=None,
) -> torch.Tensor:
    """Plaid: ``gabor(..., contrast, orientation, phase)`` + the orthogonal Gabor
    ``gabor(..., orthogonal_contrast, orientation + pi/2, phase)`` (same x, y, size, sf, phase).
    Returns (B, 1, H, W) float32."""
    x, y, size, sf, contrast, orientation, phase, oc = broadcast_params(
        x, y, size, sf, contrast, orientation, phase, orthogonal_contrast, device=device
    )
    g1 = gabor(x, y, size, sf, contrast, orientation, phase, height, width)
    g2 = gabor(x, y, size, sf, oc, orientation + math.pi / 2, phase, height, width)
    return g1 + g2


def grating_grid(**axes) -> tuple[dict[str, torch.Tensor], tuple[int, ...]]:
    """Cartesian product of parameter values, flattened for the batched stimulus functions.

    Each keyword is a parameter name. A 1-D value (list, tuple, numpy array or tensor) is an AXIS
    of the grid; a scalar (float or 0-d tensor) is a constant broadcast to every stimulus and adds
    no axis. Axes are combined in keyword order with the FIRST axis varying SLOWEST (C order,
    ``torch.meshgrid(indexing="ij")``). Two reserved keywords: ``device`` and ``dtype``
    (default: the first tensor's device, float32).

    Returns ``(params, shape)``: ``params[name]`` is a flat tensor ``(B,)`` with
    ``B = prod(shape)``, and ``shape`` the lengths of the axes in keyword order, so that
    ``responses.reshape(*shape, n_neurons)`` (for responses (B, N)) or
    ``responses.reshape(*shape)`` puts every axis back.

    Example::

        params, shape = grating_grid(x=31.5, y=17.5, size=[6., 12.], sf=[.05, .1],
                                     contrast=1., orientation=torch.linspace(0, 3.1, 8),
                                     phase=[0., 1.57])
        stim = gabor(**params, height=36, width=64)   # (2*2*8*2, 1, 36, 64)
        r = model(stim).reshape(*shape, -1)           # (size, sf, orientation, phase, neuron)
    """
    device = axes.pop("device", None)
    dtype = axes.pop("dtype", torch.float32)
    if not axes:
        raise ValueError("grating_grid needs at least one parameter")
    if device is None:
        device = _first_device(axes.values())
    tens = {}
    for name, v in axes.items():
        t = torch.as_tensor(v, dtype=dtype, device=device)
        if t.dim() > 1:
            raise ValueError(
                f"grating_grid: parameter {name!r} has shape {tuple(t.shape)}; "
                "expected a scalar or a 1-D sequence of values"
            )
        if t.dim() == 1 and t.numel() == 0:
            raise ValueError(f"grating_grid: parameter {name!r} has no values")
        tens[name] = t.to(device)
    axis_names = [k for k, t in tens.items() if t.dim() == 1]
    shape = tuple(int(tens[k].numel()) for k in axis_names)
    if axis_names:
        mesh = torch.meshgrid(*[tens[k] for k in axis_names], indexing="ij")
        flat = {k: m.reshape(-1) for k, m in zip(axis_names, mesh)}
    else:
        flat = {}
    n = int(math.prod(shape)) if shape else 1
    params = {}
    for k, t in tens.items():
        params[k] = flat[k].contiguous() if k in flat else t.expand(n).contiguous()
    return params, shape
