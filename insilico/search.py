"""Optimal Gabor and DoG stimuli by grid search, per neuron and per cluster.

Two ways to get the response of every neuron to every stimulus of a grid:

* **Direct path (the reference)**, ``respond=None, center=None``: for every (stimulus, neuron) pair
  the stimulus is *rendered* at that neuron's RF (plus the grid's positional offset) and the model
  is evaluated; only that neuron's output is kept. B stimuli x N neurons = B*N images, rendered and
  evaluated chunk by chunk (:func:`pair_responses`). Exact, expensive.
* **Centred path**, ``respond=fn`` (and/or ``center=(x, y)``): the grid is rendered *once* at
  ``center`` (default :func:`insilico.model.canvas_center`) plus the offsets, and
  ``respond(stimuli_centred (B,1,H,W)) -> (B, N)`` returns every neuron's response to each stimulus
  moved onto its own RF. The twin supplies a fast ``respond`` (its readout does the moving);
  :func:`direct_respond` is the generic one for any ResponseModel (Fourier-shifts each stimulus onto
  each RF: B*N images again, but any image, e.g. an MEI, can be moved).
* **Centred, then direct** (``refine=k`` with a centred search): each neuron's k best stimuli of
  the centred table are rendered at its RF and scored by the direct path (k*N images); the best
  of those is the result, with its direct response. The choice then equals the direct path's
  whenever the direct optimum is among the centred path's k best. ``refine`` may also be one
  count per neuron, (N,) (the twin gives its border neurons more candidates,
  :func:`insilico.twin_adapter.optimal_gabor`).

Nothing loops over neurons: loops run over chunks of stimuli (or stimulus-neuron pairs).

Conventions: the model's canvas ``image_shape`` (H, W); x = column, y = row (canvas pixels);
standardized units; radians. Grids are in canvas pixels; the named grids (:meth:`GaborGrid.cpu`,
:meth:`GaborGrid.paper`, and DoGGrid's) are defined in degrees of visual angle and converted with
the canvas's pixels per degree (:mod:`insilico.units`), so that they cover the same part of the
visual field on any canvas.
Gabor parameters follow DT Eq. 1-2 (``size`` = sigma of Eq. 1, so the envelope's standard
deviation is size / 2; ``sf`` in cycles / pixel; ``contrast`` = a, peak amplitude a / 2), DoG
parameters DT Eq. 9-10.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import xarray as xr

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
from .units import to_pixels

GABOR_KEYS = ("x", "y", "size", "sf", "contrast", "orientation", "phase")
DOG_KEYS = ("x", "y", "sigma_center", "sigma_surround", "a_center", "a_surround")
PLAID_KEYS = GABOR_KEYS + ("orthogonal_contrast",)
#: Relative margin by which a Gabor rotated by pi must drive a neuron more to be chosen over its own
#: orientation (``cluster_optimal_gabor``): above float32 rendering error, so ties keep the own.
SIGN_TIE = 1e-5


def _stimuli():
    from . import stimuli  # written in parallel; imported lazily so that this module always loads

    return stimuli


def render_gabor(height: int, width: int, **p) -> torch.Tensor:
    """Gabors (DT Eq. 1-2) from flat parameter tensors (M,) -> (M, 1, H, W)."""
    return _stimuli().gabor(*(p[k] for k in GABOR_KEYS), height=height, width=width)


def render_dog(height: int, width: int, **p) -> torch.Tensor:
    """DoGs (DT Eq. 9-10) from flat parameter tensors (M,) -> (M, 1, H, W)."""
    return _stimuli().dog(*(p[k] for k in DOG_KEYS), height=height, width=width)


def render_plaid(height: int, width: int, **p) -> torch.Tensor:
    """Plaids (optimal Gabor + orthogonal Gabor) from flat parameter tensors (M,) -> (M,1,H,W)."""
    return _stimuli().plaid(*(p[k] for k in PLAID_KEYS), height=height, width=width)


RENDERERS = {
    "gabor": (render_gabor, GABOR_KEYS),
    "dog": (render_dog, DOG_KEYS),
    "plaid": (render_plaid, PLAID_KEYS),
}


# ---------------------------------------------------------------------------------------------
# Grids
# ---------------------------------------------------------------------------------------------
def product(**axes) -> tuple[dict[str, torch.Tensor], tuple]:
    """Cartesian product of 1-d axes -> (dict of flat float32 tensors (B,), grid shape), C order."""
    vals = [
        torch.as_tensor(np.asarray(v, dtype=np.float64).ravel(), dtype=torch.float32)
        for v in axes.values()
    ]
    shape = tuple(len(v) for v in vals)
    mesh = torch.meshgrid(*vals, indexing="ij")
    return {k: m.reshape(-1) for k, m in zip(axes, mesh)}, shape


def _orients(n: int, period: float = math.pi) -> tuple:
    return tuple(float(v) for v in np.arange(n) * period / n)


# The named grids in degrees of visual angle (sizes, offsets, sigmas) and cycles / degree (sfs).
# They are the former pixel grids of the 36 x 64 canvas at the default 0.305 px / deg
# (insilico.units), rounded: e.g. sizes 6, 12 px -> 20, 40 deg; sfs 1/16, 1/10, 1/6 cycles / px
# -> 0.02, 0.03, 0.05 cycles / deg.
PAPER_GABOR_DEG = dict(
    offsets=(-6.5, 0.0, 6.5),
    sizes=(13.0, 20.0, 26.0, 40.0, 52.0, 80.0),
    sfs=(0.0125, 0.019, 0.025, 0.038, 0.05),
    contrasts=(1.0, 2.0, 4.0),
)
CPU_GABOR_DEG = dict(
    offsets=(0.0,),
    sizes=(20.0, 40.0),
    sfs=(0.02, 0.03, 0.05),
    contrasts=(4.0,),
    orientations=_orients(8),
    phases=_orients(4, 2 * math.pi),
)
PAPER_DOG_DEG = dict(
    offsets=(-6.5, 0.0, 6.5),
    sigma_center=(3.3, 6.5, 10.0, 13.0, 20.0),
    sigma_surround=(6.5, 13.0, 20.0, 26.0, 40.0),
)
CPU_DOG_DEG = dict(
    offsets=(0.0,),
    sigma_center=(5.0, 10.0, 16.0),
    sigma_surround=(13.0, 26.0),
    a_center=(-2.0, 2.0),
    a_surround=(0.0, 0.5),
)


@dataclass(frozen=True)
class GaborGrid:
    """Search grid for optimal Gabors (DT Eq. 1-2), in canvas pixels.

    offsets: pixel offsets around each RF, applied to x and y (a square of len(offsets)**2);
    sizes: sigma of Eq. 1 (envelope s.d. = size / 2), pixels; sfs: cycles / pixel;
    contrasts: a of Eq. 1 (peak amplitude a / 2, standardized units); orientations: radians in
    [0, pi) (with phases over [0, 2 pi) this covers every Gabor: rotation by pi = phase -> -phase);
    phases: radians in [0, 2 pi).

    The named grids are defined in degrees of visual angle (``PAPER_GABOR_DEG``,
    ``CPU_GABOR_DEG``) and built for a canvas from its pixels per degree:
    ``GaborGrid.paper(ppd)`` (GPU-sized: 9 positions x 6 sizes x 5 sfs x 3 contrasts x 12
    orientations x 8 phases = 77,760 stimuli); ``GaborGrid.cpu(ppd)`` (192 stimuli, RF positions
    must be known to within a few degrees).
    """

    offsets: tuple
    sizes: tuple
    sfs: tuple
    contrasts: tuple
    orientations: tuple = field(default_factory=lambda: _orients(12))
    phases: tuple = field(default_factory=lambda: _orients(8, 2 * math.pi))

    @classmethod
    def in_degrees(cls, ppd: float, offsets, sizes, sfs, **rest) -> GaborGrid:
        """A grid from offsets and sizes in degrees and sfs in cycles / degree, for a canvas of
        ``ppd`` pixels per degree; ``rest`` (contrasts, orientations, phases) as they are."""
        per_px = tuple(float(f) / float(ppd) for f in sfs)
        return cls(to_pixels(offsets, ppd), to_pixels(sizes, ppd), per_px, **rest)

    @classmethod
    def paper(cls, ppd: float) -> GaborGrid:
        """The default grid (``PAPER_GABOR_DEG``) on a canvas of ``ppd`` pixels per degree."""
        return cls.in_degrees(ppd, **PAPER_GABOR_DEG)

    @classmethod
    def cpu(cls, ppd: float) -> GaborGrid:
        """192 stimuli (``CPU_GABOR_DEG``): sizes 20, 40 deg; 0.02, 0.03, 0.05 cycles / deg;
        contrast 4; 8 orientations; 4 phases."""
        return cls.in_degrees(ppd, **CPU_GABOR_DEG)

    def axes(self) -> dict:
        """Grid axes in rendering order (x, y are offsets)."""
        return dict(
            x=self.offsets,
            y=self.offsets,
            size=self.sizes,
            sf=self.sfs,
            contrast=self.contrasts,
            orientation=self.orientations,
            phase=self.phases,
        )

    def __len__(self) -> int:
        return int(np.prod([len(v) for v in self.axes().values()]))


@dataclass(frozen=True)
class DoGGrid:
    """Search grid for optimal DoGs (DT Eq. 9-10): a_c [(1 + a_s) g(sigma_c) - a_s g(sigma_s)].

    offsets: pixels around the RF in x and y; sigma_center / sigma_surround: pixels (pairs with
    surround <= center are skipped); a_center: signed amplitude (negative = OFF centre),
    standardized units; a_surround: relative surround strength >= 0.

    Named grids in degrees, as GaborGrid's: ``DoGGrid.paper(ppd)`` (3,888 stimuli, GPU),
    ``DoGGrid.cpu(ppd)`` (20 stimuli).
    """

    offsets: tuple
    sigma_center: tuple
    sigma_surround: tuple
    a_center: tuple = (-4.0, -2.0, -1.0, 1.0, 2.0, 4.0)
    a_surround: tuple = (0.0, 0.25, 0.5, 1.0)

    @classmethod
    def in_degrees(cls, ppd: float, offsets, sigma_center, sigma_surround, **rest) -> DoGGrid:
        """A grid from offsets and sigmas in degrees, for a canvas of ``ppd`` pixels per degree."""
        px = (to_pixels(v, ppd) for v in (offsets, sigma_center, sigma_surround))
        return cls(*px, **rest)

    @classmethod
    def paper(cls, ppd: float) -> DoGGrid:
        return cls.in_degrees(ppd, **PAPER_DOG_DEG)

    @classmethod
    def cpu(cls, ppd: float) -> DoGGrid:
        return cls.in_degrees(ppd, **CPU_DOG_DEG)

    def axes(self) -> dict:
        return dict(
            x=self.offsets,
            y=self.offsets,
            sigma_center=self.sigma_center,
            sigma_surround=self.sigma_surround,
            a_center=self.a_center,
            a_surround=self.a_surround,
        )

    def params(self):
        p, _ = product(**self.axes())
        keep = p["sigma_surround"] > p["sigma_center"]
        return {k: v[keep] for k, v in p.items()}

    def __len__(self) -> int:
        return len(self.params()["x"])


def _grid_params(grid) -> dict[str, torch.Tensor]:
    if isinstance(grid, DoGGrid):
        return grid.params()
    return product(**grid.axes())[0]


# ---------------------------------------------------------------------------------------------
# Response engines
# ---------------------------------------------------------------------------------------------
def _progress(it, total, progress, desc):
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc)


def _tensor_dict(d: Mapping, device) -> dict[str, torch.Tensor]:
    return {
        k: torch.as_tensor(
            np.asarray(v, dtype=np.float32) if not torch.is_tensor(v) else v, dtype=torch.float32
        )
        .to(device)
        .reshape(-1)
        for k, v in d.items()
    }


@torch.no_grad()
def pair_responses(
    model,
    kind: str,
    neuron_params: Mapping,
    condition_params: Mapping,
    *,
    relative: Sequence[str] = (),
    respond: RespondFn | None = None,
    center=None,
    anchors=None,
    chunk_size: int = 2048,
    progress: bool = False,
) -> torch.Tensor:
    """Responses of every neuron to its own stimulus under every condition: (J, N).

    neuron_params: per-neuron stimulus parameters, each (N,), with ``x, y`` the absolute position
        at which neuron n's stimulus is shown.
    condition_params: (J,) each; per condition j, these values replace the neuron's own, except
        keys in ``relative``, which are added to them (e.g. positional offsets, orientation
        offsets).
    kind: 'gabor', 'dog' or 'plaid' (which renderer and which keys).

    Direct path (``respond=None``): the stimulus of pair (j, n) is rendered at its absolute position
    and neuron n's output is kept (``own_responses``). With ``respond``: it is rendered at
    ``center + (x_n - anchor_n)`` (``anchors`` (N, 2), default the model's RF positions) and
    ``respond`` moves it onto the RF; again only neuron n's column is kept.

    Loops over chunks of ``chunk_size`` (condition, neuron) pairs, condition-major.
    """
    height, width = image_shape(model)
    render, keys = RENDERERS[kind]
    device = model_device(model)
    npar = _tensor_dict({k: v for k, v in neuron_params.items() if k in keys}, device)
    cpar = _tensor_dict({k: v for k, v in condition_params.items() if k in keys}, device)
    missing = [k for k in keys if k not in npar and k not in cpar]
    if missing:
        raise ValueError(f"{kind} parameters missing: {missing}")
    n = len(npar["x"]) if "x" in npar else None
    if n is None:
        raise ValueError("neuron_params must give per-neuron x and y")
    j = len(next(iter(cpar.values()))) if cpar else 1
    if respond is not None:
        cx, cy = canvas_center((height, width)) if center is None else center
        anc = torch.as_tensor(rf_positions(model, anchors), dtype=torch.float32, device=device)
        npar = dict(npar, x=npar["x"] - anc[:, 0] + cx, y=npar["y"] - anc[:, 1] + cy)
        return _centred_pair_responses(
            respond,
            render,
            keys,
            npar,
            cpar,
            relative,
            j,
            n,
            min(chunk_size, 256),
            progress,
            kind,
            height,
            width,
        )
    out = torch.empty(j * n, dtype=torch.float32)
    starts = range(0, j * n, chunk_size)
    for s in _progress(starts, len(starts), progress, f"{kind} pairs"):
        k = torch.arange(s, min(s + chunk_size, j * n), device=device)
        jj, nn = k // n, k % n
        p = {}
        for key in keys:
            if key in cpar:
                v = cpar[key][jj]
                p[key] = v + npar[key][nn] if (key in relative and key in npar) else v
            else:
                p[key] = npar[key][nn]
        images = render(height=height, width=width, **p)
        if respond is None:
            r = own_responses(model, images, nn)
        else:
            r = respond(images).gather(1, nn[:, None])[:, 0]
        out[s : s + len(k)] = r.float().cpu()
    return out.reshape(j, n)


def _centred_pair_responses(
    respond, render, keys, npar, cpar, relative, j, n, chunk_size, progress, kind, height, width
) -> torch.Tensor:
    """pair_responses with ``respond``: the centred stimuli of all (condition, neuron) pairs are
    deduplicated (positions rounded to 1/4096 px) and each distinct one is passed through
    ``respond`` once; pair (j, n) reads column n. Neurons with the same optimal stimulus share
    it."""
    device = npar["x"].device
    k = torch.arange(j * n, device=device)
    jj, nn = k // n, k % n
    cols = []
    for key in keys:
        if key in cpar:
            v = cpar[key][jj]
            v = v + npar[key][nn] if (key in relative and key in npar) else v
        else:
            v = npar[key][nn]
        cols.append(torch.round(v * 4096) / 4096 if key in ("x", "y") else v)
    uniq, inv = torch.unique(torch.stack(cols, 1), dim=0, return_inverse=True)
    order = torch.argsort(inv)
    bounds = torch.searchsorted(
        inv[order], torch.arange(0, len(uniq) + chunk_size, chunk_size, device=device)
    ).tolist()
    out = torch.empty(j * n, dtype=torch.float32)
    starts = range(0, len(uniq), chunk_size)
    for c, u0 in enumerate(_progress(starts, len(starts), progress, f"centred {kind}")):
        images = render(
            height=height,
            width=width,
            **{key: uniq[u0 : u0 + chunk_size, i] for i, key in enumerate(keys)},
        )
        r = respond(images)  # (c, N)
        sel = order[bounds[c] : bounds[c + 1]]
        out[sel.cpu()] = r[inv[sel] - u0, nn[sel].to(r.device)].float().cpu()
    return out.reshape(j, n)


def shift_images(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Move images by (dx, dy) pixels (x = column, y = row): (M,1,H,W), (M,), (M,) -> (M,1,H,W).

    Fourier shift on a zero-padded (2H, 2W) canvas: exact for integer shifts (content shifted in
    from outside the canvas is 0); band-limited interpolation for fractional ones. |dx| < W,
    |dy| < H.
    """
    m, c, h, w = images.shape
    pad = torch.zeros(m, c, 2 * h, 2 * w, dtype=images.dtype, device=images.device)
    pad[..., :h, :w] = images
    f = torch.fft.rfft2(pad)
    ky = torch.fft.fftfreq(2 * h, device=images.device)[:, None]
    kx = torch.fft.rfftfreq(2 * w, device=images.device)[None, :]
    ramp = torch.exp(
        -2j
        * math.pi
        * (ky * dy.to(images.dtype)[:, None, None] + kx * dx.to(images.dtype)[:, None, None])
    )
    out = torch.fft.irfft2(f * ramp[:, None], s=(2 * h, 2 * w))
    return out[..., :h, :w].contiguous()


def direct_respond(
    model, positions=None, center=None, chunk_size: int = 2048, progress: bool = False
) -> RespondFn:
    """Generic ``respond`` for any ResponseModel: shift each centred stimulus onto each neuron's RF.

    Returns ``respond(stimuli_centred (B,1,H,W)) -> (B, N)``: entry (b, n) = neuron n's response to
    stimulus b moved from ``center`` (default canvas centre) to ``positions[n]`` (default the
    model's RF positions). B*N shifted images, evaluated in chunks, own outputs kept. This is the
    slow reference for the twin's fast respond and works for any image (MEIs included).
    """
    pos = torch.as_tensor(rf_positions(model, positions), dtype=torch.float32)

    @torch.no_grad()
    def respond(stimuli: torch.Tensor) -> torch.Tensor:
        b, _, h, w = stimuli.shape
        cx, cy = canvas_center((h, w)) if center is None else center
        device = stimuli.device
        d = pos.to(device) - torch.tensor([cx, cy], dtype=torch.float32, device=device)
        n = d.shape[0]
        out = torch.empty(b * n, dtype=torch.float32)
        starts = range(0, b * n, chunk_size)
        for s in _progress(starts, len(starts), progress, "shift pairs"):
            k = torch.arange(s, min(s + chunk_size, b * n), device=device)
            bb, nn = k // n, k % n
            imgs = shift_images(stimuli[bb], d[nn, 0], d[nn, 1])
            out[s : s + len(k)] = own_responses(model, imgs, nn).float().cpu()
        return out.reshape(b, n)

    return respond


@torch.no_grad()
def centred_responses(
    respond: RespondFn,
    kind: str,
    params: Mapping,
    *,
    center=None,
    chunk_size: int = 256,
    progress: bool = False,
    height: int,
    width: int,
    device=None,
) -> torch.Tensor:
    """Render stimuli at ``center`` + (x, y) offsets in ``params`` (each (B,)) and call ``respond``
    on chunks of ``chunk_size`` stimuli: (B, N)."""
    chunks = _centred_chunks(
        respond, kind, params, center, chunk_size, progress, height, width, device
    )
    return torch.cat([r for _, r in chunks], 0)


@torch.no_grad()
def _centred_chunks(respond, kind, params, center, chunk_size, progress, height, width, device):
    """Yield ``(start, responses (c, N))`` for consecutive chunks of the stimuli in ``params``
    rendered at ``center`` + their (x, y) offsets (see :func:`centred_responses`)."""
    render, keys = RENDERERS[kind]
    cx, cy = canvas_center((height, width)) if center is None else center
    p = _tensor_dict({k: v for k, v in params.items() if k in keys}, device or "cpu")
    p["x"] = p["x"] + cx
    p["y"] = p["y"] + cy
    starts = range(0, len(p["x"]), chunk_size)
    for s in _progress(starts, len(starts), progress, f"centred {kind}"):
        images = render(
            height=height, width=width, **{k: v[s : s + chunk_size] for k, v in p.items()}
        )
        yield s, respond(images).float().cpu()


def _top_k(chunks, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest responses of each neuron over the chunks ``(start, (c, N))`` of a
    (B, N) table, without holding the table: values and row indices, each (k, N)."""
    vals = rows = None
    for start, r in chunks:
        idx = torch.arange(start, start + len(r)).view(-1, 1).expand_as(r)
        if vals is not None:
            r, idx = torch.cat([vals, r]), torch.cat([rows, idx])
        vals, j = r.topk(min(k, len(r)), dim=0)
        rows = idx.gather(0, j)
    return vals, rows


# ---------------------------------------------------------------------------------------------
# Per-neuron search
# ---------------------------------------------------------------------------------------------
def _grid_responses(
    model, kind, grid_params, pos, *, respond, center, chunk_size, progress, height, width
):
    """(B, N) responses to the grid (x, y offsets around each RF)."""
    if respond is None and center is None:  # direct reference: render at each RF
        npar = {"x": pos[:, 0], "y": pos[:, 1]}
        return pair_responses(
            model,
            kind,
            npar,
            grid_params,
            relative=("x", "y"),
            chunk_size=chunk_size,
            progress=progress,
        )
    chunks = _grid_chunks(
        model, kind, grid_params, pos, respond, center, chunk_size, progress, height, width
    )
    return torch.cat([r for _, r in chunks])


def _grid_chunks(
    model, kind, grid_params, pos, respond, center, chunk_size, progress, height, width
):
    """The centred path's (B, N) table in chunks of stimuli, ``(start, (c, N))``."""
    if respond is None:
        respond = direct_respond(model, pos, center, chunk_size=chunk_size)
    return _centred_chunks(
        respond, kind, grid_params, center, 256, progress, height, width, model_device(model)
    )


def _best(val: torch.Tensor, idx: torch.Tensor, grid_params, pos, keys) -> xr.Dataset:
    """The stimuli ``idx`` (N,) of the grid, with responses ``val`` (N,), as a Dataset."""
    idx = idx.numpy()
    data = {k: ("neuron", grid_params[k].cpu().numpy()[idx].astype(np.float64)) for k in keys}
    data["x"] = ("neuron", pos[:, 0] + data["x"][1])
    data["y"] = ("neuron", pos[:, 1] + data["y"][1])
    data["response"] = ("neuron", val.numpy().astype(np.float64))
    return xr.Dataset(data, coords={"neuron": np.arange(len(pos))})


@torch.no_grad()
def _rescore_direct(
    model, kind, top, counts, grid_params, pos, chunk_size, progress, height, width
):
    """The stimuli ``top`` (k, N) (rows of the grid: each neuron's k best by the centred path),
    the first ``counts[m]`` of neuron m's ((N,) ints) rendered at its RF (+ the grid's offset)
    and scored by the direct path: (k, N), -inf where not re-scored."""
    render, keys = RENDERERS[kind]
    k, n = top.shape
    cand, nn = torch.nonzero(torch.arange(k)[:, None] < counts[None, :], as_tuple=True)
    p = {key: grid_params[key].float().cpu()[top[cand, nn]] for key in keys}
    rf = torch.as_tensor(np.asarray(pos), dtype=torch.float32)
    p["x"], p["y"] = p["x"] + rf[nn, 0], p["y"] + rf[nn, 1]
    device = model_device(model)
    scores = torch.full((k, n), -math.inf)
    starts = range(0, len(nn), chunk_size)
    for s in _progress(starts, len(starts), progress, f"direct re-scoring of {len(nn)} {kind}s"):
        sl = slice(s, s + chunk_size)
        images = render(
            height=height, width=width, **{key: v[sl].to(device) for key, v in p.items()}
        )
        scores[cand[sl], nn[sl]] = own_responses(model, images, nn[sl].to(device)).float().cpu()
    return scores


def _refine_counts(refine, n: int) -> torch.Tensor:
    """``refine`` (an int, or (N,) ints) as (N,) int64 counts of candidates to re-score."""
    counts = np.asarray(refine)
    if counts.ndim not in (0, 1) or (counts.ndim == 1 and counts.shape != (n,)):
        raise ValueError(f"refine must be an int or have shape ({n},); got shape {counts.shape}")
    if not np.issubdtype(counts.dtype, np.integer) or (counts < 0).any():
        raise ValueError(f"refine must be non-negative integers; got {refine!r}")
    return torch.as_tensor(np.broadcast_to(counts, (n,)).astype(np.int64))


def _optimal(
    model,
    kind,
    grid,
    keys,
    positions,
    respond,
    center,
    chunk_size,
    return_responses,
    progress,
    refine=0,
):
    """The grid search shared by :func:`optimal_gabor` and :func:`optimal_dog`. The centred
    path keeps only each neuron's best ``max(refine, 1)`` stimuli as the chunks of stimuli come
    (memory (k + chunk) x N, not B x N), unless the whole table is asked for."""
    height, width = image_shape(model)
    pos = rf_positions(model, positions)
    gp = _grid_params(grid)
    centred = not (respond is None and center is None)
    counts = _refine_counts(refine if centred else 0, len(pos))
    k = max(int(counts.max()) if len(counts) else 0, 1)
    args = (model, kind, gp, pos)
    kw = dict(chunk_size=chunk_size, progress=progress, height=height, width=width)
    resp = None
    if return_responses or not centred:
        resp = _grid_responses(*args, respond=respond, center=center, **kw)
        top_val, top = resp.topk(min(k, len(resp)), dim=0)
    else:
        top_val, top = _top_k(_grid_chunks(*args, respond, center, **kw), k)
    if counts.any():
        rescored = _rescore_direct(model, kind, top, counts, gp, pos, **kw)
        top_val = torch.where(counts[None, :] > 0, rescored, top_val)
    best = top_val.argmax(0, keepdim=True)
    ds = _best(top_val.gather(0, best)[0], top.gather(0, best)[0], gp, pos, keys)
    refine = counts.numpy() if np.ndim(refine) else int(refine) * centred
    ds.attrs.update(kind=kind, path="centred" if centred else "direct", refine=refine)
    return (ds, resp) if return_responses else ds


def optimal_gabor(
    model,
    grid: GaborGrid | None = None,
    *,
    positions=None,
    respond: RespondFn | None = None,
    center=None,
    chunk_size: int = 2048,
    return_responses: bool = False,
    progress: bool = False,
    refine=0,
):
    """Optimal Gabor per neuron by grid search (DT "Per neuron optimal Gabors").

    model: ResponseModel; positions (N, 2): RF centres (default ``model.rf_positions``) around
    which the grid's offsets are searched.
    respond / center: see the module docstring. ``respond=None, center=None`` = direct reference.
    refine: with a centred search, re-score each neuron's ``refine`` best stimuli by the direct
    path and keep the best of them (module docstring); 0 = no re-scoring; an int, or (N,) ints
    (one count per neuron).

    Returns an xr.Dataset over ``neuron`` with x, y (absolute, pixels), size, sf, contrast,
    orientation, phase and response (the best predicted rate; with ``refine``, the direct path's);
    with ``return_responses`` also the (B, N) response table of the search (a torch tensor, grid
    order of ``product(**grid.axes())``; the centred path's, before re-scoring).
    """
    return _optimal(
        model,
        "gabor",
        GaborGrid.paper(pixels_per_degree(model)) if grid is None else grid,
        GABOR_KEYS,
        positions,
        respond,
        center,
        chunk_size,
        return_responses,
        progress,
        refine,
    )


def optimal_dog(
    model,
    grid: DoGGrid | None = None,
    *,
    positions=None,
    respond: RespondFn | None = None,
    center=None,
    chunk_size: int = 2048,
    return_responses: bool = False,
    progress: bool = False,
    refine=0,
):
    """Optimal DoG per neuron by grid search (DT Eq. 9-10); as :func:`optimal_gabor`.

    Returns an xr.Dataset over ``neuron``: x, y, sigma_center, sigma_surround, a_center,
    a_surround, response.
    """
    return _optimal(
        model,
        "dog",
        DoGGrid.paper(pixels_per_degree(model)) if grid is None else grid,
        DOG_KEYS,
        positions,
        respond,
        center,
        chunk_size,
        return_responses,
        progress,
        refine,
    )


# ---------------------------------------------------------------------------------------------
# Per-cluster search
# ---------------------------------------------------------------------------------------------
def _cluster_matrix(clusters, n, weights=None):
    """Cluster labels (K,), each neuron's cluster index (N,), and (N, K) matrices of the plain
    and the weighted (``cluster_weights``) cluster means."""
    labels = np.asarray(clusters)
    if labels.shape != (n,):
        raise ValueError(
            f"clusters must have shape ({n},) (one label per neuron); got {labels.shape}"
        )
    uniq, inv = np.unique(labels, return_inverse=True)
    onehot = np.zeros((n, len(uniq)), dtype=np.float32)
    onehot[np.arange(n), inv] = 1.0
    plain, weighted = (
        torch.as_tensor(onehot * cluster_weights(inv, w)[:, None]).float() for w in (None, weights)
    )
    return uniq, inv, plain, weighted


def _circ_nearest(targets: np.ndarray, grid: np.ndarray, period: float) -> np.ndarray:
    d = np.abs((targets[..., None] - grid + period / 2) % period - period / 2)
    return d.argmin(-1)


def cluster_optimal_gabor(
    model,
    clusters,
    grid: GaborGrid | None = None,
    *,
    positions=None,
    orientations=None,
    orientation_offsets: Sequence[float] = (0.0,),
    respond: RespondFn | None = None,
    center=None,
    weights=None,
    chunk_size: int = 2048,
    progress: bool = False,
) -> xr.Dataset:
    """Optimal Gabor per cluster (DT "Per cluster optimal Gabors").

    One set of size, sf, contrast, phase (and an orientation offset) shared by a cluster; neuron n
    sees it at its own RF ``positions[n]`` and orientation ``orientations[n] + offset`` (defaults:
    the model's rf_positions / preferred_orientations; for the twin pass the per-neuron optimal
    Gabors' x, y, orientation). The grid's positional offsets are not used. Maximises the mean
    response over each cluster's neurons, weighted by ``weights`` (N,) if given (e.g. 1 /
    response s.d., :func:`insilico.model.cluster_weights`); all clusters at once (one-hot matrix
    product). ``cluster_response`` is the plain mean rate at the chosen Gabor.

    Orientation sign: a preferred orientation is known mod pi only, and rotating a Gabor by pi
    turns phase tau into -tau, so with one shared phase, neurons of a cluster whose orientations
    differ by pi would need opposite phases. Each neuron therefore sees the shared Gabor at
    ``orientations[n] + offset`` or at that + pi, whichever drives it more (as DT Eq. 7 and
    :func:`insilico.cluster_mei.cluster_mei` do); the cluster mean is over these per-neuron maxima.

    Direct path (default): pairs rendered exactly. With ``respond``/``center`` (centred path), the
    shared grid is rendered once per absolute orientation of ``grid.orientations`` and of
    ``grid.orientations + pi``, and each neuron reads the orientation nearest (mod 2 pi) to its own
    preferred orientation + offset (+ pi).

    Returns an xr.Dataset with dims ``cluster`` (label coordinate; cluster_size, cluster_sf,
    cluster_contrast, cluster_phase, cluster_orientation_offset, cluster_response = the mean) and
    ``neuron`` (cluster_label, and the full per-neuron parameters x, y, size, sf, contrast,
    orientation (the chosen sign included), phase and response) -- the Dataset can be handed
    straight to the experiments.
    """
    height, width = image_shape(model)
    grid = GaborGrid.paper(pixels_per_degree(model)) if grid is None else grid
    pos = rf_positions(model, positions)
    n = len(pos)
    pref = preferred_orientations(model, orientations, n)
    uniq, inv, avg, wavg = _cluster_matrix(clusters, n, weights)
    offsets = np.asarray(orientation_offsets, dtype=np.float64).ravel()
    signed = (offsets[:, None] + np.array([0.0, math.pi])).ravel()  # (n_off * 2,) off, off + pi
    shared = dict(
        size=grid.sizes,
        sf=grid.sfs,
        contrast=grid.contrasts,
        phase=grid.phases,
        orientation=signed,
    )
    sp, _ = product(**shared)
    b = len(sp["size"])
    if respond is None and center is None:
        npar = {"x": pos[:, 0], "y": pos[:, 1], "orientation": pref}
        resp = pair_responses(
            model,
            "gabor",
            npar,
            sp,
            relative=("orientation",),
            chunk_size=chunk_size,
            progress=progress,
        )  # (B, N)
    else:
        base_o = np.asarray(grid.orientations, dtype=np.float64)
        abs_o = np.concatenate([base_o, base_o + math.pi])
        full, _ = product(
            x=(0.0,),
            y=(0.0,),
            size=grid.sizes,
            sf=grid.sfs,
            contrast=grid.contrasts,
            phase=grid.phases,
            orientation=abs_o,
        )
        resp_full = _grid_responses(
            model,
            "gabor",
            full,
            pos,
            respond=respond,
            center=center,
            chunk_size=chunk_size,
            progress=progress,
            height=height,
            width=width,
        )  # (B0 * O, N)
        b0 = b // len(signed)
        resp_full = resp_full.reshape(b0, len(abs_o), n)
        tgt = pref[None, :] + signed[:, None]  # (n_off * 2, N)
        nearest = torch.as_tensor(_circ_nearest(tgt, abs_o, 2 * math.pi))  # (n_off * 2, N)
        # resp[b0, s, n] = resp_full[b0, nearest[s, n], n]
        idx = nearest[None].expand(b0, -1, -1)
        resp = resp_full.gather(1, idx).reshape(b, n)
    # each neuron's better sign: (B / 2, N); flip where orientation + pi drives it more by more
    # than float error (an even Gabor is the same at both signs: keep the neuron's own)
    pair = resp.reshape(-1, 2, n)
    flip = pair[:, 1] > pair[:, 0] + SIGN_TIE * pair[:, 0].abs()
    resp = torch.where(flip, pair[:, 1], pair[:, 0])
    sp = {k: v.reshape(-1, 2)[:, 0] for k, v in sp.items()}  # shared parameters, sign dropped
    best = (resp @ wavg).argmax(0)  # (K,)
    val = (resp[best] * avg.T).sum(1)  # plain mean rate of each cluster at its Gabor
    best = best.numpy()
    cl = {
        f"cluster_{k}": ("cluster", sp[k].numpy()[best].astype(np.float64))
        for k in ("size", "sf", "contrast", "phase")
    }
    cl["cluster_orientation_offset"] = (
        "cluster",
        sp["orientation"].numpy()[best].astype(np.float64),
    )
    cl["cluster_response"] = ("cluster", val.numpy().astype(np.float64))
    bn = best[inv]  # each neuron's cluster's best stimulus
    neu = {
        k: ("neuron", sp[k].numpy()[bn].astype(np.float64))
        for k in ("size", "sf", "contrast", "phase")
    }
    sign = math.pi * flip.numpy()[bn, np.arange(n)]
    neu["orientation"] = ("neuron", pref + sp["orientation"].numpy()[bn] + sign)
    neu["x"] = ("neuron", pos[:, 0].copy())
    neu["y"] = ("neuron", pos[:, 1].copy())
    neu["response"] = ("neuron", resp.numpy()[bn, np.arange(n)].astype(np.float64))
    neu["cluster_label"] = ("neuron", uniq[inv])
    ds = xr.Dataset({**cl, **neu}, coords={"cluster": uniq, "neuron": np.arange(n)})
    ds.attrs.update(
        kind="cluster_gabor", path="direct" if respond is None and center is None else "centred"
    )
    return ds


def cluster_optimal_dog(
    model,
    clusters,
    grid: DoGGrid | None = None,
    *,
    positions=None,
    respond: RespondFn | None = None,
    center=None,
    weights=None,
    chunk_size: int = 2048,
    progress: bool = False,
) -> xr.Dataset:
    """Optimal DoG per cluster: shared sigma/amplitudes, each neuron at its own RF (no offsets).
    ``weights`` (N,): as :func:`cluster_optimal_gabor`'s.

    Returns an xr.Dataset with dims ``cluster`` (cluster_sigma_center, cluster_sigma_surround,
    cluster_a_center, cluster_a_surround, cluster_response = mean) and ``neuron`` (cluster_label
    and the full per-neuron parameters x, y, sigma_center, ..., response).
    """
    height, width = image_shape(model)
    grid = DoGGrid.paper(pixels_per_degree(model)) if grid is None else grid
    pos = rf_positions(model, positions)
    n = len(pos)
    uniq, inv, avg, wavg = _cluster_matrix(clusters, n, weights)
    gp = DoGGrid(
        offsets=(0.0,),
        sigma_center=grid.sigma_center,
        sigma_surround=grid.sigma_surround,
        a_center=grid.a_center,
        a_surround=grid.a_surround,
    ).params()
    resp = _grid_responses(
        model,
        "dog",
        gp,
        pos,
        respond=respond,
        center=center,
        chunk_size=chunk_size,
        progress=progress,
        height=height,
        width=width,
    )
    best = (resp @ wavg).argmax(0)  # (K,)
    val = (resp[best] * avg.T).sum(1)  # plain mean rate of each cluster at its DoG
    best = best.numpy()
    shared = ("sigma_center", "sigma_surround", "a_center", "a_surround")
    cl = {f"cluster_{k}": ("cluster", gp[k].numpy()[best].astype(np.float64)) for k in shared}
    cl["cluster_response"] = ("cluster", val.numpy().astype(np.float64))
    bn = best[inv]
    neu = {k: ("neuron", gp[k].numpy()[bn].astype(np.float64)) for k in shared}
    neu["x"] = ("neuron", pos[:, 0].copy())
    neu["y"] = ("neuron", pos[:, 1].copy())
    neu["response"] = ("neuron", resp.numpy()[bn, np.arange(n)].astype(np.float64))
    neu["cluster_label"] = ("neuron", uniq[inv])
    ds = xr.Dataset({**cl, **neu}, coords={"cluster": uniq, "neuron": np.arange(n)})
    ds.attrs.update(
        kind="cluster_dog", path="direct" if respond is None and center is None else "centred"
    )
    return ds


def params_of(ds, keys=GABOR_KEYS) -> dict[str, np.ndarray]:
    """Per-neuron parameter dict (N,) from a search Dataset, a DataFrame or a mapping."""
    out = {}
    for k in keys:
        if k not in ds:
            raise ValueError(f"stimulus parameters lack {k!r}; have {list(ds.keys())}")
        v = ds[k]
        out[k] = np.asarray(getattr(v, "values", v), dtype=np.float64).reshape(-1)
    return out


def greedy_gabor_set(
    models: Sequence,
    optimal,
    grid: GaborGrid | None = None,
    *,
    fraction: float = 0.5,
    n_select: int = 20,
    center=None,
    chunk_size: int = 256,
    progress: bool = False,
) -> xr.Dataset:
    """A few screen-centred Gabors that drive many neurons (DT "Selection of suboptimal stimuli",
    Fig. 5D-E): every Gabor of ``grid`` (its positional offsets ignored) is shown at ``center``
    (default the canvas centre), NOT moved onto the RFs, to every neuron of every model in
    ``models`` (ResponseModels on one canvas, e.g. one per scan); grid default: ``GaborGrid.paper``
    at the first model's pixels per degree; then
    :func:`insilico.indices.greedy_stimulus_set` picks up to ``n_select`` of them, each covering the
    most not-yet-covered neurons at >= ``fraction`` of their optimum.

    optimal: (N,) each neuron's optimal-Gabor response, neurons of ``models`` concatenated.
    Returns an xr.Dataset over ``rank`` (selection order): x, y (absolute, pixels), size, sf,
    contrast, orientation, phase, n_covered (neurons first covered by this stimulus) and coverage
    (fraction of all N neurons covered by stimuli 0..rank); attrs fraction, n_neurons.
    """
    from .indices import greedy_stimulus_set

    shapes = {image_shape(m) for m in models}
    if len(shapes) != 1:
        raise ValueError(f"greedy_gabor_set: the models' canvases differ: {sorted(shapes)}")
    height, width = shapes.pop()
    grid = GaborGrid.paper(pixels_per_degree(models[0])) if grid is None else grid
    params = product(**dict(grid.axes(), x=(0.0,), y=(0.0,)))[0]
    cx, cy = canvas_center((height, width)) if center is None else center
    resp = torch.cat(
        [
            centred_responses(
                m,
                "gabor",
                params,
                center=(cx, cy),
                chunk_size=chunk_size,
                progress=progress,
                height=height,
                width=width,
                device=model_device(m),
            )
            for m in models
        ],
        1,
    )  # (B, N)
    opt = np.asarray(optimal, dtype=np.float64)
    chosen, coverage = greedy_stimulus_set(resp.numpy(), opt, fraction=fraction, n_select=n_select)
    data = {k: ("rank", params[k].numpy()[chosen].astype(np.float64)) for k in GABOR_KEYS}
    data["x"] = ("rank", data["x"][1] + cx)
    data["y"] = ("rank", data["y"][1] + cy)
    data["coverage"] = ("rank", coverage)
    counts = np.diff(np.concatenate([[0.0], coverage]) * len(opt))
    data["n_covered"] = ("rank", np.rint(counts).astype(np.int64))
    ds = xr.Dataset(data, coords={"rank": np.arange(len(chosen))})
    ds.attrs.update(fraction=float(fraction), n_neurons=len(opt))
    return ds
