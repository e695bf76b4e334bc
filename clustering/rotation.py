"""Cyclic rotation of bar codes by any angle (ICLR Eq. 2) and its von Mises relaxation (ICLR Eq. 4).

A bar code has shape (F, O): F features x O orientations; orientation index o is the angle 2*pi*o/O.
Rotation acts on the last axis.

Sign convention: rotating a bar code ``r`` by ``alpha`` gives ``r(alpha)[..., o] = r[..., o + s]``
with ``s = alpha * O / (2*pi)``, indices modulo O, linearly interpolated between the two nearest
integer shifts (the rows of S_alpha in ICLR Eq. 2 carry ``1 - gamma`` at column ``o + i`` and
``gamma`` at ``o + i + 1``). For ``alpha = 2*pi*k/O`` this is ``np.roll(r, -k, axis=-1)``: the
orientation that was at index k moves to index 0. Rotating by ``alpha`` and then by ``-alpha`` is
the identity when alpha is a multiple of 2*pi/O (for other angles the two interpolations smooth the
bar code).

Every function takes NumPy arrays or torch tensors and returns the same kind.
"""

import math

import numpy as np
import torch


def _as_tensor(x, dtype=None, device=None):
    """(tensor, was_numpy) for a NumPy array, scalar or tensor."""
    if isinstance(x, torch.Tensor):
        return x.to(dtype=dtype or x.dtype, device=device or x.device), False
    return torch.as_tensor(np.asarray(x), dtype=dtype or torch.float64, device=device), True


def _circulant(coeffs):
    """Circulant matrices with ``M[..., j, c] = coeffs[..., (c - j) mod O]``.

    coeffs: (..., O) -> (..., O, O). Row j of M applied to a vector v gives sum_d coeffs[d]
    v[j + d].
    """
    n_orient = coeffs.shape[-1]
    j = torch.arange(n_orient, device=coeffs.device)
    idx = (j[None, :] - j[:, None]) % n_orient  # (O, O): (c - j) mod O
    return coeffs[..., idx]


def shift_coefficients(alpha, orientations):
    """Coefficients of the O integer shifts in S_alpha (ICLR Eq. 2).

    alpha: (...) radians (tensor). Returns (..., O): weight ``1 - gamma`` at shift i and ``gamma``
    at shift i + 1 (mod O), with ``i = floor(alpha*O/(2*pi)) mod O``, ``gamma`` the fractional part.
    """
    pos = alpha * orientations / (2 * math.pi)
    base = torch.floor(pos)
    gamma = pos - base
    i = base.long() % orientations
    lower = torch.nn.functional.one_hot(i, orientations).to(alpha.dtype)
    upper = torch.nn.functional.one_hot((i + 1) % orientations, orientations).to(alpha.dtype)
    return (1 - gamma)[..., None] * lower + gamma[..., None] * upper


def von_mises_coefficients(alpha, temperature, orientations):
    """Coefficients gamma_1..gamma_O of the relaxed rotation (ICLR Eq. 4).

    alpha: (...) radians; temperature: scalar or broadcastable tensor, T >= 0 (dimensionless).
    Returns (..., O): softmax over d of ``T * cos(alpha - 2*pi*d/O)``.
    """
    d = torch.arange(orientations, device=alpha.device, dtype=alpha.dtype) * (
        2 * math.pi / orientations
    )
    logits = torch.as_tensor(temperature, dtype=alpha.dtype, device=alpha.device)[
        ..., None
    ] * torch.cos(alpha[..., None] - d)
    return torch.softmax(logits, dim=-1)


def rotation_matrix(alpha, orientations):
    """Cyclic rotation matrix S_alpha (ICLR Eq. 2).

    alpha: scalar or (N,) radians. Returns (O, O) or (N, O, O); ``r(alpha) = S_alpha @ r`` for a
    single feature r of shape (O,). Exact cyclic shift for multiples of 2*pi/O, linear interpolation
    between the two nearest shifts otherwise.
    """
    a, was_numpy = _as_tensor(alpha)
    out = _circulant(shift_coefficients(a, orientations))
    return out.numpy() if was_numpy else out


def relaxed_rotation_matrix(alpha, temperature, orientations):
    """Von Mises relaxation S~_alpha of the cyclic rotation matrix (ICLR Eq. 4).

    alpha: scalar or (N,) radians; temperature: T >= 0. Returns (O, O) or (N, O, O). Tends to
    S_alpha as T -> infinity for alpha a multiple of 2*pi/O (to the nearest shift otherwise);
    T = 0 averages over all orientations.
    """
    a, was_numpy = _as_tensor(alpha)
    out = _circulant(von_mises_coefficients(a, temperature, orientations))
    return out.numpy() if was_numpy else out


def _apply(matrices, barcodes):
    """Apply (N, O, O) or (O, O) matrices to bar codes (N, F, O) along the orientation axis."""
    if matrices.ndim == 2:
        return torch.einsum("jc,nfc->nfj", matrices, barcodes)
    return torch.einsum("njc,nfc->nfj", matrices, barcodes)


def _check(barcodes, alpha):
    if barcodes.ndim != 3:
        raise ValueError(f"barcodes must have shape (N, F, O), got {tuple(barcodes.shape)}")
    if alpha.ndim not in (0, 1) or (alpha.ndim == 1 and alpha.shape[0] != barcodes.shape[0]):
        raise ValueError(
            f"alpha must be a scalar or have shape ({barcodes.shape[0]},), got {tuple(alpha.shape)}"
        )


def rotate(barcodes, alpha):
    """Rotate bar codes by per-neuron angles with S_alpha (ICLR Eq. 2).

    barcodes: (N, F, O); alpha: scalar or (N,) radians. Returns (N, F, O), same kind as
    ``barcodes``.
    """
    x, was_numpy = _as_tensor(barcodes)
    a, _ = _as_tensor(alpha, dtype=x.dtype, device=x.device)
    _check(x, a)
    out = _apply(_circulant(shift_coefficients(a, x.shape[-1])), x)
    return out.numpy() if was_numpy else out


def relaxed_rotate(barcodes, alpha, temperature):
    """Rotate bar codes with the von Mises relaxation S~_alpha (ICLR Eq. 4).

    barcodes: (N, F, O); alpha: scalar or (N,) radians; temperature: T >= 0 (scalar; a tensor keeps
    gradients). Returns (N, F, O), same kind as ``barcodes``.
    """
    x, was_numpy = _as_tensor(barcodes)
    a, _ = _as_tensor(alpha, dtype=x.dtype, device=x.device)
    _check(x, a)
    out = _apply(_circulant(von_mises_coefficients(a, temperature, x.shape[-1])), x)
    return out.numpy() if was_numpy else out


#: Channel orders of a flat (N, C) bar code, C = F*O: "feature-major" (v1twin's core: channel
#: k = f*O + o) or "rotation-major" (neuralpredictors' rotation-equivariant core: k = o*F + f, as
#: its ``view(B, O, F, H, W)``).
ORDERS = ("feature-major", "rotation-major")


def as_barcodes(x, orientations=None, order=None):
    """Bar codes as (N, F, O), same kind as ``x`` (numpy or torch).

    x: (N, F, O), passed through; or flat (N, F*O), which needs ``orientations`` (O) and the
    channel ``order`` ("feature-major": k = f*O + o, v1twin's; "rotation-major": k = o*F + f,
    neuralpredictors'): there is no default, since both orders give valid-looking bar codes.
    ``order="rotation-major"`` with a 3-d ``x`` reads it as (N, O, F).
    """
    shape = tuple(x.shape)
    if order is not None and order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if len(shape) == 2:
        if orientations is None or order is None:
            raise ValueError(
                f"flat barcodes {shape} need orientations= (O) and order= (one of {ORDERS})"
            )
        if shape[1] % orientations:
            raise ValueError(f"cannot split {shape[1]} features into {orientations} orientations")
        if order == "feature-major":
            return x.reshape(shape[0], shape[1] // orientations, orientations)
        x = x.reshape(shape[0], orientations, shape[1] // orientations)
    elif len(shape) != 3:
        raise ValueError(f"barcodes must be (N, F, O) or flat (N, F*O); got shape {shape}")
    if order == "rotation-major":
        x = x.swapaxes(1, 2)
    if orientations is not None and x.shape[2] != orientations:
        raise ValueError(f"barcodes have {x.shape[2]} orientations, expected {orientations}")
    return x
