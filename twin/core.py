"""Rotation-equivariant convolutional core (Ecker et al. 2019).

Each layer has F features in O orientations. A filter is a vector of 2D Hermite
coefficients (`twin.hermite`); its O copies are the filter rotated by 2*pi*o/O,
o = 0..O-1, through the exact coefficient rotation matrix. Hidden layers also cyclically
shift the orientation axis of their input channels, so that the whole core is equivariant.

CHANNEL ORDER (the contract every reader of the core output uses): the core output
(B, F*O, H, W) is FEATURE-MAJOR, channel ``c = f * O + o``; ``out.view(B, F, O, H, W)``
gives (feature, orientation). Orientation o is the feature's filter rotated by 2*pi*o/O
counter-clockwise as displayed.

Equivariance: rotating the input counter-clockwise by 2*pi*k/O (k*90 degrees exactly on
the pixel grid when O is a multiple of 4) rotates every feature map spatially and rolls the
orientation axis forward: ``out(rot x)[:, f, o] == rot(out(x)[:, f, (o - k) % O])``,
i.e. ``torch.roll(out.view(B, F, O, H, W), k, dims=2)``.

Layers: conv -> batch norm (one per feature, shared by its O orientations) -> ELU,
except the last layer, which has no ELU. 'same' zero padding: output H, W == input H, W.

Padding is gray (``padding="gray"``, the default). Each hidden layer subtracts its own response
to a uniform gray image (a constant per feature: ELU of the batch norm's output for a zero
input), so a gray image (0 in standardized units) gives 0 at every hidden layer and each layer's
zero padding is exactly what an infinite gray screen would put there. The canvas edge then acts
only where a stimulus's own support, widened by the hidden layers' reach, crosses it, instead of
wherever the core's receptive field does (this is what keeps the equivariant fast path of
`insilico.twin_adapter` exact for stimuli on gray). On natural images it changes only the border
pixels: in the interior a constant offset of a layer's input is removed by the next batch norm.
``padding="zero"`` is the plain zero padding of twins stored before it existed.

Surround pooling (``surround_sigmas``, optional). Natural-image neurons are suppressed by
contrast far outside their RF (for the virtual V1, 13-25 px from the RF centre), further than a
small core reaches. For each sigma the core appends F_hidden more features: the last hidden
layer's activity h squared (local energy, 0 at gray), blurred by an isotropic Gaussian G of that
std (core-grid pixels, truncated at 3 sigma, zero padding), then ``log(1 + sqrt(G * h^2))``,
batch-normalised. sqrt(G * h^2) is the pooled contrast (linear in contrast, as the surround of a
divisive normalisation model), and its log turns the exponential output's sum into a quotient:
a negative readout weight w on it gives a rate ``exp(drive) / (1 + S)^|w|``. The blur is
isotropic and per channel, so the core stays translation- and rotation-equivariant; it acts on
the hidden layer, which is 0 at gray, so gray padding and the border rule (the hidden layers'
reach) are unchanged. Output features: ``out_features = F_last + len(sigmas) * F_hidden``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .hermite import hermite_basis, n_basis, rotation_matrices, synthesize

__all__ = ["HermiteRotConv2d", "RotationEquivariantCore", "PADDINGS"]

PADDINGS = ("gray", "zero")


class HermiteRotConv2d(nn.Module):
    """One rotation-equivariant convolution.

    Args:
        in_features: input features F_in (1 for the image; its orientation count is 1).
        in_orientations: orientations of the input (1 for the image, O for hidden layers).
        out_features: F_out.
        orientations: O, the number of rotated copies of each output filter.
        kernel_size: odd filter size S (pixels).
        n_orders: Hermite orders; K = n_orders*(n_orders+1)/2 coefficients per filter.
        sigma: Hermite width in pixels (default fits the kernel).
        dilation: spacing of the filter taps in pixels (1: a plain convolution). A dilated
            filter covers (kernel_size - 1) * dilation + 1 pixels at the same cost.

    Input (B, F_in*O_in, H, W), feature-major; output (B, F_out*O, H, W), feature-major.
    """

    def __init__(
        self,
        in_features,
        in_orientations,
        out_features,
        orientations,
        kernel_size,
        n_orders,
        sigma=None,
        dilation=1,
    ):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.orientations = orientations
        self.in_orientations = in_orientations
        self.kernel_size, self.dilation = kernel_size, int(dilation)
        k = n_basis(n_orders)
        # Derived from the constructor arguments, so not part of the state dict.
        basis = hermite_basis(kernel_size, n_orders, sigma)
        self.register_buffer("basis", torch.tensor(basis, dtype=torch.float32), persistent=False)
        rotations = rotation_matrices(orientations, n_orders)
        self.register_buffer(
            "rotations", torch.tensor(rotations, dtype=torch.float32), persistent=False
        )
        o, q = np.meshgrid(np.arange(orientations), np.arange(in_orientations), indexing="ij")
        # Output orientation o reads input orientation q with base weights of (q - o) mod O_in.
        self.register_buffer(
            "shift_index", torch.tensor((q - o) % in_orientations), persistent=False
        )
        # Unit-variance output for unit-variance input: ||filter|| ~ 1/sqrt(input channels).
        basis_norm = self.basis.flatten(1).norm(dim=1).mean().item()
        std = 1.0 / (basis_norm * np.sqrt(in_features * in_orientations * k))
        self.coefficients = nn.Parameter(
            torch.randn(out_features, in_features, in_orientations, k) * std
        )

    def rotated_coefficients(self) -> torch.Tensor:
        """Hermite coefficients of all filters (F_out*O, F_in*O_in, K), both channel axes
        feature-major."""
        w = torch.einsum(
            "oKk,fiqk->foiqK", self.rotations, self.coefficients
        )  # (F_out, O, F_in, O_in, K)
        f_out, o, f_in, o_in, k = w.shape
        idx = self.shift_index.view(1, o, 1, o_in, 1).expand(f_out, -1, f_in, -1, k)
        return torch.gather(w, 3, idx).reshape(f_out * o, f_in * o_in, k)

    def filters(self) -> torch.Tensor:
        """Spatial filters (F_out*O, F_in*O_in, S, S), both channel axes feature-major."""
        return synthesize(self.rotated_coefficients(), self.basis)

    @property
    def reach(self) -> int:
        """Radius (pixels) of the filter's support: dilation * (kernel_size // 2)."""
        return self.dilation * (self.kernel_size // 2)

    def forward(self, x: torch.Tensor, same: bool = True) -> torch.Tensor:
        """(B, F_in*O_in, H, W) -> (B, F_out*O, H, W) with 'same' zero padding, or without
        padding (``same=False``: the valid part, H - 2 reach by W - 2 reach)."""
        d = self.dilation
        pad = self.reach if same else 0
        if x.shape[1] == 1:  # image layer: convolve with the K basis functions, then mix (faster)
            projections = F.conv2d(
                x, self.basis[:, None].to(x.dtype), padding=pad, dilation=d
            )  # (B, K, H, W)
            return torch.einsum("ck,bkhw->bchw", self.rotated_coefficients()[:, 0], projections)
        return F.conv2d(x, self.filters(), padding=pad, dilation=d)


class RotationEquivariantCore(nn.Module):
    """Stack of HermiteRotConv2d layers (see module doc for channel order and equivariance).

    Args:
        features: F per layer, e.g. (16, 16, 16).
        orientations: O (all layers).
        kernel_sizes: odd filter size per layer, e.g. (13, 5, 5).
        n_hermite: Hermite orders per layer (int or tuple); default (S+1)//2 per layer.
        dilations: dilation per layer (default 1 each); see `HermiteRotConv2d`.
        momentum: batch-norm momentum.
        padding: "gray" (hidden layers answer 0 to gray, so padding equals gray; see the module
            doc) or "zero".
        surround_sigmas: stds (core-grid pixels) of the surround pooling (module doc); () none.

    forward: standardized images (B, 1, H, W) -> features (B, out_features*O, H, W).
    """

    def __init__(
        self,
        features=(16, 16, 16),
        orientations=8,
        kernel_sizes=(13, 5, 5),
        n_hermite=None,
        momentum=0.1,
        dilations=None,
        padding="gray",
        surround_sigmas=(),
    ):
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}; got {padding!r}")
        self.padding = padding
        features, kernel_sizes = tuple(features), tuple(kernel_sizes)
        if len(features) != len(kernel_sizes):
            raise ValueError(
                f"features {features} and kernel_sizes {kernel_sizes} differ in length"
            )
        if n_hermite is None:
            n_hermite = tuple((s + 1) // 2 for s in kernel_sizes)
        elif isinstance(n_hermite, int):
            n_hermite = (n_hermite,) * len(features)
        self.features, self.orientations = features, orientations
        dilations = tuple(int(d) for d in (dilations or (1,) * len(features)))
        if len(dilations) != len(features) or min(dilations) < 1:
            raise ValueError(f"dilations {dilations} must be >= 1, one per layer ({len(features)})")
        self.kernel_sizes, self.n_hermite = kernel_sizes, tuple(n_hermite)
        self.dilations = dilations
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        in_f, in_o = 1, 1
        for f, s, n, d in zip(features, kernel_sizes, self.n_hermite, dilations):
            self.convs.append(HermiteRotConv2d(in_f, in_o, f, orientations, s, n, dilation=d))
            self.norms.append(nn.BatchNorm3d(f, momentum=momentum))
            in_f, in_o = f, orientations
        self.surround_sigmas = tuple(float(s) for s in surround_sigmas)
        if self.surround_sigmas and (len(features) < 2 or min(self.surround_sigmas) <= 0):
            raise ValueError(
                f"surround_sigmas {self.surround_sigmas} need sigmas > 0 and a hidden layer "
                f"(features {features})"
            )
        self.surround_norms = nn.ModuleList(
            nn.BatchNorm3d(features[-2], momentum=momentum) for _ in self.surround_sigmas
        )
        for i, sigma in enumerate(self.surround_sigmas):
            self.register_buffer(f"surround_kernel{i}", _gaussian_kernel(sigma), persistent=False)

    @property
    def out_features(self) -> int:
        """Features of the output: F_last, plus F_hidden per surround sigma."""
        return self.features[-1] + len(self.surround_sigmas) * (
            self.features[-2] if self.surround_sigmas else 0
        )

    @property
    def out_channels(self) -> int:
        """C = out_features * O."""
        return self.out_features * self.orientations

    @property
    def config(self) -> dict:
        """Constructor arguments (JSON-serializable)."""
        return {
            "features": list(self.features),
            "orientations": self.orientations,
            "kernel_sizes": list(self.kernel_sizes),
            "n_hermite": list(self.n_hermite),
            "dilations": list(self.dilations),
            "momentum": self.norms[0].momentum,
            "padding": self.padding,
            "surround_sigmas": list(self.surround_sigmas),
        }

    def reach(self, hidden_only: bool = False) -> int:
        """Receptive-field radius (core-grid pixels) of the core's output, or with
        ``hidden_only`` of its last hidden layer (how far a stimulus's influence has spread
        before the last convolution and the surround pooling; what gray padding's border rule
        needs)."""
        hidden = sum(conv.reach for conv in self.convs[:-1])
        return hidden if hidden_only else hidden + self._last_reach()

    def _last_reach(self) -> int:
        """Reach of the output over the last hidden layer: its convolution or the surround."""
        pooled = max((k.shape[-1] // 2 for k in self._surround_kernels()), default=0)
        return max(self.convs[-1].reach, pooled)

    def _layer(self, i: int, x: torch.Tensor, offset=None, same: bool = True) -> torch.Tensor:
        """Layer i: convolution ('same', or valid with ``same=False``), batch norm, and for
        hidden layers ELU minus the layer's answer to gray (``padding="gray"``).
        (B, C_in, h, w) -> (B, C_out, h', w')."""
        conv, norm = self.convs[i], self.norms[i]
        z = conv(x, same)
        b, _, h, w = z.shape
        z = z.view(b, -1, self.orientations, h, w)
        if i == 0 and offset is not None:
            z = z + offset.to(z.dtype).view(b, -1, 1, 1, 1)
        x = norm(z)
        if i < len(self.convs) - 1:
            x = F.elu(x)
            if self.padding == "gray":
                x = x - F.elu(_normalized_zero(norm, z))
        return x.view(b, -1, h, w)

    def forward(self, x: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """Standardized images (B, 1, H, W) -> features (B, out_features*O, H, W).

        offset: (B, F_first) added to the first layer's convolution output, the same for every
        orientation and pixel (behaviour inputs, `twin.behavior`), so equivariance holds."""
        for i in range(len(self.convs)):
            hidden = x
            x = self._layer(i, x, offset)
        if not self.surround_sigmas:
            return x
        return torch.cat([x, *self._surround(hidden)], dim=1)

    def forward_at(self, x: torch.Tensor, origin: torch.Tensor, size: int = 2) -> torch.Tensor:
        """``forward(x)`` in one size x size window per image, computing each layer only in
        that window's cone (eval mode): the same numbers for far fewer operations when a
        readout looks at one point.

        x: standardized images (B, 1, H, W); origin: (B, 2) int64 (row, col) of each window's
        top-left output pixel, inside the canvas. Returns (B, out_features*O, size, size) ==
        ``forward(x)[b, :, r:r + size, c:c + size]``. Each layer runs without padding on its
        window; positions outside the canvas are set to 0, which is what the 'same' padding of
        the full forward puts there.
        """
        if self.training:
            raise RuntimeError("forward_at needs eval mode (batch norm with running statistics)")
        height, width = x.shape[-2:]
        last = len(self.convs) - 1
        widths = [size + 2 * self._last_reach()]  # input windows, from the last layer down
        for conv in reversed(self.convs[:-1]):
            widths.insert(0, widths[0] + 2 * conv.reach)
        origin = origin.to(x.device)
        x = _window(x, origin - (widths[0] - size) // 2, widths[0], height, width)
        for i in range(last):
            x = self._layer(i, x, same=False)
            o = origin - (widths[i + 1] - size) // 2
            x = x * _inside(o, widths[i + 1], height, width).to(x.dtype)
        hidden = x
        out = self._layer(last, _centre(hidden, size + 2 * self.convs[-1].reach), same=False)
        if not self.surround_sigmas:
            return out
        pooled = self._surround(hidden)  # 'same' blur of the window: exact in its centre
        return torch.cat([out, *(_centre(p, size) for p in pooled)], dim=1)

    def _surround_kernels(self) -> list:
        return [getattr(self, f"surround_kernel{i}") for i in range(len(self.surround_sigmas))]

    def _surround(self, hidden: torch.Tensor) -> list:
        """Surround pooling (module doc) of the last hidden activity (B, F_h*O, H, W): one
        (B, F_h*O, H, W) tensor per sigma, ``BN(log(1 + sqrt(G * hidden^2)))``."""
        b, c, h, w = hidden.shape
        energy = hidden.pow(2)
        out = []
        for kernel, norm in zip(self._surround_kernels(), self.surround_norms):
            rows, cols = _blur_matrix(kernel, h).to(energy), _blur_matrix(kernel, w).to(energy)
            pooled = rows @ energy @ cols.T  # separable Gaussian blur with zero padding
            pooled = torch.log1p(torch.sqrt(pooled.clamp_min(0) + 1e-8))
            out.append(norm(pooled.view(b, -1, self.orientations, h, w)).view(b, c, h, w))
        return out

    def regularizer(self) -> torch.Tensor:
        """Mean squared Hermite coefficient, summed over layers (L2 weight decay of the filters)."""
        return sum(conv.coefficients.pow(2).mean() for conv in self.convs)


def _window(x: torch.Tensor, origin: torch.Tensor, size: int, height: int, width: int):
    """(B, C, H, W), top-left corners (B, 2) (row, col; may lie outside) -> (B, C, size, size)
    windows, 0 outside the canvas."""
    steps = torch.arange(size, device=x.device)
    rows, cols = origin[:, :1] + steps, origin[:, 1:] + steps  # (B, size) each
    batch = torch.arange(x.shape[0], device=x.device)[:, None, None]
    r, c = rows.clamp(0, height - 1)[:, :, None], cols.clamp(0, width - 1)[:, None, :]
    out = x[batch, :, r, c].permute(0, 3, 1, 2)  # advanced indices first: (B, size, size, C)
    return out * _inside(origin, size, height, width).to(x.dtype)


def _inside(origin: torch.Tensor, size: int, height: int, width: int) -> torch.Tensor:
    """(B, 1, size, size) bool: which pixels of each window (corner ``origin``) are on the
    canvas."""
    steps = torch.arange(size, device=origin.device)
    rows, cols = origin[:, :1] + steps, origin[:, 1:] + steps
    ok_r, ok_c = (rows >= 0) & (rows < height), (cols >= 0) & (cols < width)
    return (ok_r[:, :, None] & ok_c[:, None, :])[:, None]


def _centre(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central size x size part of square windows (B, C, S, S)."""
    m = (x.shape[-1] - size) // 2
    return x[..., m : m + size, m : m + size]


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised 1D Gaussian of std ``sigma`` pixels on [-ceil(3 sigma), ceil(3 sigma)]."""
    r = int(np.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def _blur_matrix(kernel: torch.Tensor, n: int) -> torch.Tensor:
    """(n, n) banded Toeplitz matrix M with M[i, j] = kernel[j - i + r] for |j - i| <= r (r the
    kernel's radius): ``M @ v`` is the 'same' convolution of v (length n) with the symmetric
    ``kernel``, zero-padded. As matmuls the blur made a cpu-preset training step 3.6x faster on
    2 CPU cores than as 1-channel conv2ds."""
    r = kernel.shape[-1] // 2
    offset = torch.arange(n).view(1, -1) - torch.arange(n).view(-1, 1) + r
    inside = (offset >= 0) & (offset <= 2 * r)
    return torch.where(inside, kernel[offset.clamp(0, 2 * r)], torch.zeros(()))


def _normalized_zero(norm: nn.BatchNorm3d, z: torch.Tensor) -> torch.Tensor:
    """What `norm` makes of a zero input, (1, F, 1, 1, 1), with the statistics it uses on z
    (B, F, O, H, W): the batch's in training, the running ones in eval."""
    if norm.training or norm.running_mean is None:
        mean, var = z.mean((0, 2, 3, 4)), z.var((0, 2, 3, 4), unbiased=False)
    else:
        mean, var = norm.running_mean, norm.running_var
    return (norm.bias - norm.weight * mean / torch.sqrt(var + norm.eps)).view(1, -1, 1, 1, 1)
