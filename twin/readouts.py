"""Per-scan linear readouts from the core's feature maps to each neuron's drive.

Core features are (B, C, H, W) with C = F*O in the feature-major channel order stated in
`twin.core` (channel c = f*O + o). Bar codes (feature weights) use the same order, so
``barcodes`` (N, F, O) is ``features.view(N, F, O)``.

Positions: ``rf_positions`` are canvas pixels (x = column index, y = row index, pixel
centres at integers). `at_rf` is the translation-equivariant fast path: given the features
of stimuli centred on the canvas centre ((W-1)/2, (H-1)/2), it returns each neuron's drive
as if each stimulus had been moved onto that neuron's own receptive field.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FactorizedReadout", "GaussianReadout", "READOUTS"]


class _Readout(nn.Module):
    """Shared parameters: feature weights (N, C) and bias (N,).

    ``reads_one_point``: whether a neuron's drive depends on the core output only at its read
    point (then `own_at` computes it from a 2 x 2 window of the core)."""

    reads_one_point = False

    def __init__(self, n_neurons, features, orientations, height, width):
        super().__init__()
        self.n_neurons, self.n_features, self.orientations = n_neurons, features, orientations
        self.height, self.width = height, width
        channels = features * orientations
        self.features = nn.Parameter(torch.randn(n_neurons, channels) / channels**0.5)
        self.bias = nn.Parameter(torch.zeros(n_neurons))

    @property
    def pool_reach(self) -> float:
        """Radius (core-grid pixels) of a normalisation pool around each read point; 0: none."""
        return 0.0

    @property
    def barcodes(self) -> torch.Tensor:
        """Feature weights (N, F, O), feature-major (see module doc)."""
        return self.features.view(self.n_neurons, self.n_features, self.orientations)

    def _pixel_to_unit(self, xy: torch.Tensor) -> torch.Tensor:
        """Canvas pixels (x, y) -> grid_sample coordinates in [-1, 1] (align_corners=True)."""
        size = xy.new_tensor([self.width - 1, self.height - 1])
        return 2 * xy / size - 1

    def _unit_to_pixel(self, u: torch.Tensor) -> torch.Tensor:
        size = u.new_tensor([self.width - 1, self.height - 1])
        return (u + 1) / 2 * size


class FactorizedReadout(_Readout):
    """Spatial mask (x) feature weights (Klindt et al. 2017).

    drive_n = sum_{c,h,w} mask[n,h,w] * features[n,c] * core_out[b,c,h,w] + bias[n].

    Args:
        n_neurons, features, orientations, height, width: N, F, O and the core output H, W.
        mask_l1, feature_l1: strengths of the L1 penalties in `regularizer`.
    """

    def __init__(
        self, n_neurons, features, orientations, height, width, mask_l1=1e-2, feature_l1=1e-2
    ):
        super().__init__(n_neurons, features, orientations, height, width)
        self.mask_l1, self.feature_l1 = mask_l1, feature_l1
        self.mask = nn.Parameter(torch.rand(n_neurons, height, width) / (height * width) ** 0.5)

    @property
    def hyperparameters(self) -> dict:
        return {"mask_l1": self.mask_l1, "feature_l1": self.feature_l1}

    def _drive(self, core_out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled = torch.einsum("bchw,nhw->bnc", core_out, mask)
        return (pooled * self.features).sum(-1) + self.bias

    def forward(self, core_out: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> linear drive (B, N)."""
        return self._drive(core_out, self.mask)

    def own(self, core_out: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Drive (M,) of neuron idx[m] to image m: core_out (M, C, H, W), idx (M,) long."""
        pooled = torch.einsum("mchw,mhw->mc", core_out, self.mask[idx])
        return (pooled * self.features[idx]).sum(-1) + self.bias[idx]

    def regularizer(self) -> torch.Tensor:
        """L1 of masks and of feature weights, averaged over neurons (scalar)."""
        return (
            self.mask_l1 * self.mask.abs().sum() + self.feature_l1 * self.features.abs().sum()
        ) / self.n_neurons

    @property
    def rf_positions(self) -> torch.Tensor:
        """Centre of mass of |mask| in canvas pixels (N, 2), columns (x, y)."""
        m = self.mask.abs()
        m = m / m.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)
        rows = torch.arange(self.height, dtype=m.dtype, device=m.device)
        cols = torch.arange(self.width, dtype=m.dtype, device=m.device)
        return torch.stack([(m.sum(1) * cols).sum(-1), (m.sum(2) * rows).sum(-1)], dim=1)

    def centred_masks(self) -> torch.Tensor:
        """Masks translated so that each RF centre of mass lies on the canvas centre (N, H, W).

        Bilinear resampling, zeros outside; exact for integer translations.
        """
        centre = self.mask.new_tensor([(self.width - 1) / 2, (self.height - 1) / 2])
        offset = self.rf_positions.detach() - centre  # (N, 2) pixels
        rows = torch.arange(self.height, dtype=self.mask.dtype, device=self.mask.device)
        cols = torch.arange(self.width, dtype=self.mask.dtype, device=self.mask.device)
        gy, gx = torch.meshgrid(rows, cols, indexing="ij")
        # centred[h, w] = mask[h + dy, w + dx]
        xy = torch.stack([gx, gy], dim=-1)[None] + offset[:, None, None, :]
        grid = self._pixel_to_unit(xy)
        return F.grid_sample(
            self.mask[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )[:, 0]

    def at_rf(self, core_out_centred: torch.Tensor) -> torch.Tensor:
        """Drive (B, N) for centred stimuli moved onto each neuron's RF (module doc)."""
        return self._drive(core_out_centred, self.centred_masks())


class GaussianReadout(_Readout):
    """Reads the core at a learned point per neuron (Lurz et al. 2020).

    Position mu_n in [-1, 1]^2 (x, y; -1/+1 = first/last pixel centre) is read with
    bilinear F.grid_sample. In training the read point is mu + sigma * eps (eps ~ N(0, 1),
    sigma learned); in eval mode it is mu.

    Args:
        n_neurons, features, orientations, height, width: N, F, O and the core output H, W.
        init_mu_range: initial mu ~ U(-r, r); init_sigma: initial sigma (unit coordinates).
        feature_l1: strength of the L1 penalty on feature weights in `regularizer`.
    """

    reads_one_point = True

    def __init__(
        self,
        n_neurons,
        features,
        orientations,
        height,
        width,
        init_mu_range=0.5,
        init_sigma=0.1,
        feature_l1=1e-2,
    ):
        super().__init__(n_neurons, features, orientations, height, width)
        self.init_mu_range, self.init_sigma, self.feature_l1 = init_mu_range, init_sigma, feature_l1
        self.mu = nn.Parameter(torch.empty(n_neurons, 2).uniform_(-init_mu_range, init_mu_range))
        self.sigma = nn.Parameter(torch.full((n_neurons, 2), float(init_sigma)))

    @property
    def hyperparameters(self) -> dict:
        return {
            "init_mu_range": self.init_mu_range,
            "init_sigma": self.init_sigma,
            "feature_l1": self.feature_l1,
        }

    def _read(self, core_out: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Features at grid points (B, N, 2) unit coordinates -> (B, C, N)."""
        return F.grid_sample(
            core_out,
            grid[:, :, None, :],
            mode="bilinear",
            padding_mode="border",
            align_corners=True,
        )[..., 0]

    def forward(self, core_out: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) -> linear drive (B, N). shift: (B, 2) unit coordinates added to every
        read point of a trial (a pupil shifter's output, `twin.behavior`); None: 0."""
        mu = self.mu.clamp(-1, 1)[None].expand(core_out.shape[0], -1, -1)
        if shift is not None:
            mu = (mu + shift[:, None, :]).clamp(-1, 1)
        if self.training:
            mu = (mu + self.sigma * torch.randn_like(mu)).clamp(-1, 1)
        sampled = self._read(core_out, mu.to(core_out.dtype))  # (B, C, N)
        # A broadcast product, not einsum("bcn,nc->bn"): that runs as N tiny batched matmuls,
        # 5-8% of a cpu-preset training step (benchmarks/step.py).
        return (sampled * self.features.T.to(sampled.dtype)).sum(1) + self.bias

    def own(self, core_out: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Drive (M,) of neuron idx[m] to image m, read at mu (eval): core_out (M, C, H, W), idx
        (M,)."""
        mu = self.mu.clamp(-1, 1)[idx].to(core_out.dtype)  # (M, 2)
        sampled = self._read(core_out, mu[:, None, :])[..., 0]  # (M, C)
        return self._own_drive(sampled, idx)

    def _own_drive(self, sampled: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Drive (M,) of neuron idx[m] from its read features sampled (M, C)."""
        return (sampled * self.features[idx].to(sampled.dtype)).sum(-1) + self.bias[idx]

    def own_at(self, core_window, idx: torch.Tensor) -> torch.Tensor:
        """`own` from the core output around each read point only (eval).

        core_window: ``f(origin (M, 2) int64 (row, col)) -> (M, C, 2, 2)``, the core output
        at rows r, r + 1 and columns c, c + 1 of image m (``RotationEquivariantCore.forward_at``);
        idx: (M,) neurons. Returns the drive (M,), bilinear at mu as `own` reads it.
        """
        xy = self._unit_to_pixel(self.mu.clamp(-1, 1)[idx].detach())  # (M, 2) core-grid px
        last = xy.new_tensor([self.width - 2, self.height - 2]).clamp_min(0)
        corner = torch.minimum(xy.floor(), last)
        fx, fy = (xy - corner).unbind(-1)
        window = core_window(corner.flip(-1).long())  # (M, C, 2, 2)
        fx, fy = fx[:, None].to(window.dtype), fy[:, None].to(window.dtype)
        top = window[..., 0, 0] * (1 - fx) + window[..., 0, 1] * fx
        bottom = window[..., 1, 0] * (1 - fx) + window[..., 1, 1] * fx
        sampled = top * (1 - fy) + bottom * fy  # (M, C)
        return self._own_drive(sampled, idx)

    def regularizer(self) -> torch.Tensor:
        """L1 of feature weights, averaged over neurons (scalar)."""
        return self.feature_l1 * self.features.abs().sum() / self.n_neurons

    @property
    def rf_positions(self) -> torch.Tensor:
        """mu in canvas pixels (N, 2), columns (x, y)."""
        return self._unit_to_pixel(self.mu.clamp(-1, 1))

    def at_rf(self, core_out_centred: torch.Tensor) -> torch.Tensor:
        """Drive (B, N) for centred stimuli moved onto each neuron's RF (module doc).

        Reads the canvas centre (unit coordinates (0, 0)) with each neuron's own weights.
        """
        centre = core_out_centred.new_zeros(core_out_centred.shape[0], 1, 2)
        sampled = self._read(core_out_centred, centre)[..., 0]  # (B, C)
        return sampled @ self.features.to(sampled.dtype).T + self.bias


class NormalizedGaussianReadout(GaussianReadout):
    """A Gaussian readout divided by each neuron's own surround (divisive normalisation, in the
    spirit of Burg et al. 2021; the form of the virtual V1's surround, `simulator`).

    The drive is a log-rate: drive_n = gaussian drive_n - log(1 + k_n S_n), so with the ``exp``
    output rate_n = exp(gaussian drive_n) / (1 + k_n S_n). The pool is
    S_n = sqrt(sum_p w_n(p) E(p)), the core's local energy
    E(p) = sum_f a_f sum_o (core_{f,o}(p) - b_f)^2 (a_f >= 0 and b_f learned, shared over
    orientations, so E is rotation-invariant) over an annulus around the read point,
    w_n(r) = exp(-r^2 / 2 so_n^2) (1 - exp(-r^2 / 2 si_n^2))^2 / Z_n, with Z_n its integral over the
    plane (not over the canvas, so the weights are the same at every position) and the widths
    si_n, so_n (core-grid pixels) and the strength k_n = softplus(kappa_n) learned per neuron.

    Args: those of `GaussianReadout`, plus init_inner, init_outer: initial si, so (grid px).
    """

    reads_one_point = False  # the pool reads an annulus

    def __init__(
        self,
        n_neurons,
        features,
        orientations,
        height,
        width,
        init_mu_range=0.5,
        init_sigma=0.1,
        feature_l1=1e-2,
        init_inner=3.0,
        init_outer=5.0,
    ):
        super().__init__(
            n_neurons, features, orientations, height, width, init_mu_range, init_sigma, feature_l1
        )
        self.init_inner, self.init_outer = init_inner, init_outer
        widths = torch.log(torch.tensor([[init_inner, init_outer]], dtype=torch.float32))
        self.log_widths = nn.Parameter(widths.repeat(n_neurons, 1))
        self.kappa = nn.Parameter(torch.full((n_neurons,), -1.0))
        self.energy_weight = nn.Parameter(torch.full((features,), -1.0))
        self.energy_offset = nn.Parameter(torch.zeros(features))

    @property
    def hyperparameters(self) -> dict:
        return {
            **super().hyperparameters,
            "init_inner": self.init_inner,
            "init_outer": self.init_outer,
        }

    @property
    def pool_reach(self) -> float:
        """Radius (core-grid pixels) beyond which the annuli weigh < 1e-4 of their peak: 4.3 so."""
        return 4.3 * self.log_widths[:, 1].exp().max().item()

    def _annulus(self, centres: torch.Tensor, idx=None) -> torch.Tensor:
        """Pool weights (M, H*W) of neurons idx (default all) around centres (M, 2), unit
        coordinates."""
        widths = self.log_widths.exp() if idx is None else self.log_widths[idx].exp()
        si, so = (v.view(-1, 1, 1) for v in widths.unbind(1))
        xy = self._unit_to_pixel(centres)
        rows = torch.arange(self.height, dtype=xy.dtype, device=xy.device).view(1, -1, 1)
        cols = torch.arange(self.width, dtype=xy.dtype, device=xy.device).view(1, 1, -1)
        r2 = (rows - xy[:, 1].view(-1, 1, 1)) ** 2 + (cols - xy[:, 0].view(-1, 1, 1)) ** 2
        w = torch.exp(-r2 / (2 * so**2)) * (1 - torch.exp(-r2 / (2 * si**2))) ** 2
        # integral over the plane of exp(-a r^2) (1 - exp(-b r^2))^2 = pi (1/a - 2/(a+b) + 1/(a+2b))
        a, b = 1 / (2 * so**2), 1 / (2 * si**2)
        z = torch.pi * (1 / a - 2 / (a + b) + 1 / (a + 2 * b))
        return (w / z).flatten(1)

    def _energy(self, core_out: torch.Tensor) -> torch.Tensor:
        """Local energy E (B, H*W) of core features (B, C, H, W)."""
        b, _, h, w = core_out.shape
        z = core_out.view(b, self.n_features, self.orientations, h, w) - self.energy_offset.view(
            1, -1, 1, 1, 1
        )
        return torch.einsum("bfohw,f->bhw", z**2, F.softplus(self.energy_weight)).flatten(1)

    def _log_divisor(self, pooled_energy: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
        return torch.log1p(F.softplus(kappa) * torch.sqrt(pooled_energy.clamp_min(0) + 1e-8))

    def forward(self, core_out: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) -> log-rate drive (B, N). shift: that of `GaussianReadout.forward`; it
        moves the read points, while the pools stay around the unshifted ones."""
        pooled = self._energy(core_out) @ self._annulus(self.mu.clamp(-1, 1)).T
        return super().forward(core_out, shift) - self._log_divisor(pooled, self.kappa)

    def own(self, core_out: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Drive (M,) of neuron idx[m] to image m (eval): core_out (M, C, H, W), idx (M,)."""
        pooled = (self._energy(core_out) * self._annulus(self.mu.clamp(-1, 1)[idx], idx)).sum(-1)
        return super().own(core_out, idx) - self._log_divisor(pooled, self.kappa[idx])

    def at_rf(self, core_out_centred: torch.Tensor) -> torch.Tensor:
        """Drive (B, N) for centred stimuli moved onto each neuron's RF (module doc)."""
        pooled = (
            self._energy(core_out_centred) @ self._annulus(self.mu.new_zeros(self.n_neurons, 2)).T
        )
        return super().at_rf(core_out_centred) - self._log_divisor(pooled, self.kappa)


READOUTS = {
    "factorized": FactorizedReadout,
    "gaussian": GaussianReadout,
    "gaussian_dn": NormalizedGaussianReadout,
}
