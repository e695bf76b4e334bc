"""The virtual V1: a ground-truth population of model neurons of known types.

Real recordings cannot tell whether the pipeline is right; this simulator can. ``VirtualV1`` is a
``torch.nn.Module`` mapping images ``(B, 1, 36, 64)`` in STANDARDIZED units (0 = mean gray, 1 = one
std of natural-image pixels) to noiseless firing rates ``(B, N)`` (expected spike counts per trial,
always > 0). ``simulate_scans`` shows it natural image patches and draws Poisson spike counts, with
repeated test images, in the layout of a Sensorium scan; ``write_simulation`` writes Sensorium
folders (through ``v1twin.sensorium.write_sensorium``) plus ``truth.csv``.

Stimulus conventions are those of ``insilico.stimuli`` (the neurons' filters ARE built with
``insilico.stimuli.gabor`` / ``dog``): position x = column, y = row (pixels); orientation phi as in
DT Eq. 2 (phi = 0: horizontal stripes, wave vector along +y); sf in cycles/pixel; ``size`` is the
paper's sigma (envelope std = size / 2). So ``gabor(rf_x, rf_y, size, sf, a, orientation, 0)`` is
(up to a 2% DC correction, see below) the preferred stimulus of a neuron's linear part.

One response function for every neuron
--------------------------------------
Per neuron n (RF centre r_n, orientation theta_n, spatial frequency nu_n, size sigma_n)::

    Le, Lo   = <x, f_even>, <x, f_odd>        quadrature pair at (r_n, theta_n, nu_n, sigma_n),
                                              phases 0 and pi/2, DC removed, unit L2 norm
                                              (for "dog" cells: Le = <x, DoG filter>, Lo = 0)
    Lpe, Lpo = the same pair at the orthogonal orientation theta_n + pi/2
    E(p)     = sum over 8 orientations of |x * h_theta|^2 (p): orientation-untuned local energy map
               (complex Gabors at the population's base sf 0.07 c/px and size 0.9 / 0.07, DC
               removed, unit norm; zero padding = gray outside the canvas; via FFT, evaluated on
               the stride-2 grid of pixels, which is exact since x * h_theta is band-limited)
    tuned    = (1 - m) relu(Le) + m sqrt(Le^2 + Lo^2)          m: energy mix (phase invariance)
    untuned  = sqrt(sum_p wc_n(p) E(p))                        wc: Gaussian at the RF (sum 1)
    drive    = (1 - u) tuned + u untuned                       u: untuned (contrast-energy) mix
    S        = sqrt(sum_p ws_n(p) E(p))                        ws: annulus around the RF (sum 1)
    C        = sqrt(Lpe^2 + Lpo^2)                             orthogonal energy at the RF
    z        = drive / (1 + k_sur S / s0 + k_cross C / c0) / d0     divisive normalisation
    rate     = baseline + gain * z ** 1.5

``s0``, ``c0`` (the medians of S and C) and ``d0`` (the mean of drive / denominator) are calibrated
per neuron on natural image patches, so ``k_sur`` and ``k_cross`` are dimensionless: on a typical
natural image the denominator is about 1 + k_sur + k_cross. ``gain`` is set so that the mean rate
over natural images equals the neuron's ``target_mean`` (log-uniform in [1, 4] spikes per trial),
``baseline`` is 15-35 % of it. The annulus ``ws`` is
``exp(-r^2 / 2(3 s)^2) (1 - exp(-r^2 / 2(2 s)^2))^2`` and ``wc`` a Gaussian of std ``0.5 s``, with
``s = size / 2`` the RF envelope std.

Types
-----
Which types a population holds, in what proportions, and every range quoted below come from a
``simulator.population.Population`` (the numbers below are the ``"default"`` population's: six
types in equal numbers; ``POPULATIONS`` names others). A type is ONE response function up to RF
position and orientation (and small jitter), namely the formula above with a type-specific filter
and type-specific ranges of the graded strengths:

================  ========  =============  ============  ============  ===========
type              filter    energy mix m   untuned u     k_sur         k_cross
================  ========  =============  ============  ============  ===========
simple            Gabor     weak           weak          weak          weak
complex           Gabor     STRONG         weak          weak          weak
simple_surround   Gabor     weak           weak          STRONG        weak
complex_cross     Gabor     STRONG         weak          weak          STRONG
dog               DoG (ON)  weak           weak          weak          weak
contrast_energy   Gabor     STRONG         STRONG        weak          weak
================  ========  =============  ============  ============  ===========

weak / STRONG: m in U(0, 0.2) / U(0.8, 1); u in U(0, 0.1) / U(0.8, 0.95); k_sur, k_cross
log-uniform in [0.1, 0.8] / [2, 6] (a weak k still gives a small, graded suppression index).
Every neuron thus carries GRADED amounts of every nonlinearity, strong in its own type and weak
(never exactly 0) elsewhere, so the tuning indices
vary within types too (phase invariance: m; orientation tuning: u; surround suppression: k_sur;
cross-orientation inhibition: k_cross).

* Phase decision: every Gabor-type neuron's linear part has the SAME phase, tau = 0
  (even-symmetric, bright centre stripe: an ON-centred "bar" detector). Rotation by pi maps
  tau = 0 to tau = 0, so alignment over orientation needs no phase; a type is one function. The
  ``phase`` column of ``truth`` is 0 for all neurons.
* "dog" cells are ON-centre DoGs (DT Eq. 9, a_cen = 1, sigma_sur = 3 sigma_cen, a_sur chosen so
  that the surround integral is 0.9 x the centre's, sigma_cen = 2.5 px +-10 %, peak sf
  0.041-0.05 c/px). Their orientation is drawn like the others but only sets their weak
  cross-orientation pool (the DoG is isotropic);
  their ``sf`` is the peak of the DoG's amplitude spectrum and ``size`` is 2 sigma_cen.
* "contrast_energy" cells (the sixth type) respond to local contrast energy of any orientation
  (80-95 %) with a weak, phase-invariant preference for theta_n.
* Jitter within a type: sf = 0.07 c/px x U(0.87, 1.15) (0.061-0.081 c/px, wavelength 12-16 px);
  size = 0.9 / sf x U(0.9, 1.1) (envelope std about 0.45 wavelength, 5.6-7.3 px).
* RF centres: uniform in the canvas minus a margin of 10 px (x in [10, 53], y in [10, 25]);
  orientations uniform in [0, pi).
* Filters of Gabor types have their DC removed (f - (sum f / sum env) env, a 2 % correction), so
  that they do not respond to uniform luminance; DoG filters keep their 10 % DC (ON cells respond
  to light).

Scans
-----
Each scan has its own neuron population (seed ``seed * 1000 + scan index``) drawn from the same
type distribution and its OWN natural images (as in Sensorium, scans do not share images).
Images are random crops at random scales (crop height 72 px up to the largest that fits, aspect
36:64, random horizontal flip) of the photographs bundled with scikit-image, scikit-learn and
matplotlib (nothing is downloaded), grayscale, area-resized to 36 x 64 and stored raw in [0, 255].
The model sees ``(raw - pixel_mean) / pixel_std`` with the mean and std of the scan's train images.
Image ids are unique across scans (scan k uses ids from ``k * 100000``); test images are repeated
``n_repeats`` times with the same id; trial order is shuffled.

Behaviour (``simulate_scans(behavior=True)``)
---------------------------------------------
Each trial then also records behaviour (3 values, as Sensorium: pupil dilation, its derivative,
running speed) and the pupil centre (2 values, eye-camera pixels), with known effects:

* running speed v (cm/s, |N(0, 1)| x 10, so half-normal) multiplies the stimulus-driven part of
  every neuron's rate: ``rate = baseline + gain * exp(RUNNING_GAIN * v_z) * z ** 1.5``, with
  ``v_z = (v - E v) / sd v`` (its population mean and s.d.). Pupil dilation and its derivative
  are recorded (dilation correlated with running, 0.5) but have no effect.
* the pupil centre ``PUPIL_REST + PUPIL_SD * e`` (e ~ N(0, 1) per coordinate) moves the eye: the
  image on the retina is the screen image translated by ``-EYE_SHIFT * e`` canvas pixels (gray
  outside), so every RF lies, on the screen, at ``rf_positions + EYE_SHIFT * e`` (x, y).

Behaviour is drawn from its own random stream, so the images, neurons and (without behaviour)
responses of a seed are those of ``behavior=False``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from insilico.stimuli import dog as dog_stimulus
from insilico.stimuli import gabor
from insilico.units import sensorium_pixels_per_degree

from .population import TYPES, Population, load_population

__all__ = [
    "TYPES",
    "VirtualV1",
    "SimulatedScan",
    "natural_images",
    "simulate_scans",
    "write_simulation",
]

HEIGHT, WIDTH = 36, 64
RUNNING_GAIN = 0.4  # log-gain of the stimulus drive per s.d. of running speed
EYE_SHIFT = 2.0  # canvas pixels the RFs move on the screen per s.d. of the pupil centre
PUPIL_REST, PUPIL_SD = (160.0, 120.0), 8.0  # eye-camera pixels
N_ENERGY_ORIENTATIONS = 8
EXPONENT = 1.5
_EPS = 1e-6


# ----------------------------------------------------------------------------------------------
# natural images
# ----------------------------------------------------------------------------------------------
def _gray(im) -> np.ndarray:
    im = np.asarray(im)
    if im.dtype == bool:
        im = im.astype(np.float64) * 255.0
    im = im.astype(np.float64)
    if im.ndim == 3:
        im = im[..., :3] @ np.array([0.2125, 0.7154, 0.0721])
    if im.max() <= 1.0:
        im = im * 255.0
    return im.astype(np.float32)


@functools.lru_cache(maxsize=1)
def _source_photographs() -> tuple[np.ndarray, ...]:
    """Grayscale photographs in [0, 255] bundled with the installed packages (no network)."""
    out = []
    try:
        import skimage.data as skd

        for name in (
            "astronaut",
            "brick",
            "camera",
            "chelsea",
            "clock",
            "coffee",
            "coins",
            "grass",
            "gravel",
            "moon",
            "rocket",
            "immunohistochemistry",
        ):
            try:
                out.append(_gray(getattr(skd, name)()))
            except Exception:  # an image that needs the network, or a missing one
                pass
    except ImportError:
        pass
    try:
        from sklearn.datasets import load_sample_images

        out.extend(_gray(im) for im in load_sample_images().images)
    except Exception:
        pass
    try:
        import matplotlib.cbook as cbook
        import matplotlib.pyplot as plt

        out.append(_gray(plt.imread(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))))
    except Exception:
        pass
    if len(out) < 3:
        raise RuntimeError(
            "natural_images: fewer than 3 bundled photographs could be loaded "
            "(scikit-image / scikit-learn / matplotlib sample data)"
        )
    return tuple(out)


def natural_images(n: int, seed=0, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """``n`` natural image patches ``(n, 1, height, width)`` float32, raw in [0, 255].

    Random crops at random scales (crop height log-uniform from ``2 * height`` to the largest
    crop of aspect height:width that fits) of the bundled photographs, random horizontal flips,
    area-resized. Deterministic given ``seed`` (an int or a sequence of ints).
    """
    photos = _source_photographs()
    rng = np.random.default_rng(seed)
    out = np.empty((n, 1, height, width), np.float32)
    aspect = width / height
    for k in range(n):
        im = photos[rng.integers(len(photos))]
        H, W = im.shape
        h_max = min(H, int(W / aspect))
        h_min = min(2 * height, h_max)
        h = int(round(math.exp(rng.uniform(math.log(h_min), math.log(h_max)))))
        w = min(W, int(round(h * aspect)))
        r0 = rng.integers(0, H - h + 1)
        c0 = rng.integers(0, W - w + 1)
        crop = torch.from_numpy(np.ascontiguousarray(im[r0 : r0 + h, c0 : c0 + w]))[None, None]
        patch = F.interpolate(crop, size=(height, width), mode="area")[0, 0].numpy()
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        out[k, 0] = patch
    return np.clip(out, 0.0, 255.0)


# ----------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------
def _dc_free_unit(f: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
    """Remove the DC of filters f (K, H, W) along their envelopes env, then unit L2 norm."""
    dc = f.sum((-2, -1), keepdim=True) / env.sum((-2, -1), keepdim=True)
    f = f - dc * env
    return f / f.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1)


def _dog_peak_sf(sc: float, ss: float, a_cen: float, a_sur: float) -> float:
    f = np.linspace(0.0, 0.5, 5001)
    amp = a_cen * (
        (1 + a_sur) * sc**2 * np.exp(-2 * np.pi**2 * sc**2 * f**2)
        - a_sur * ss**2 * np.exp(-2 * np.pi**2 * ss**2 * f**2)
    )
    return float(f[np.argmax(np.abs(amp))])


class VirtualV1(torch.nn.Module):
    """A population of ``n_neurons`` model V1 neurons of known types (see the module docstring).

    ``forward(x)``: ``x`` ``(B, 1, H, W)`` standardized images -> ``(B, N)`` noiseless rates > 0.
    Differentiable in ``x`` (for MEIs). Move with ``.to(device)``.

    Attributes (numpy, length N): ``rf_positions (N, 2)`` (x, y px), ``preferred_orientations``
    (rad), ``spatial_frequencies`` (c/px), ``sizes`` (paper sigma, px), ``types`` (str), and the
    graded strengths ``energy_mix``, ``untuned_mix``, ``surround_strength``, ``cross_strength``;
    ``truth`` is a DataFrame with one row per neuron.

    ``calibration_images``: standardized natural images (M, 1, H, W) used to set the pool scales
    and gains; default: 600 patches from ``natural_images`` standardized by their own mean/std.
    """

    def __init__(
        self,
        n_neurons: int = 300,
        seed: int = 0,
        height: int = HEIGHT,
        width: int = WIDTH,
        population: Population | str | dict = "default",
        calibration_images: np.ndarray | torch.Tensor | None = None,
    ):
        super().__init__()
        if n_neurons < 1:
            raise ValueError(f"VirtualV1: n_neurons must be >= 1, got {n_neurons}")
        pop = self.population = load_population(population)
        self.n_neurons, self.height, self.width, self.seed = int(n_neurons), height, width, seed
        self.image_shape = (int(height), int(width))
        rng = np.random.default_rng(seed)
        N = self.n_neurons
        self.types = pop.draw_types(N, rng)
        margin = pop.margin

        self.rf_positions = np.stack(
            [
                rng.uniform(margin, width - 1 - margin, N),
                rng.uniform(margin, height - 1 - margin, N),
            ],
            1,
        )
        self.preferred_orientations = rng.uniform(0.0, math.pi, N)
        sf = pop.base_sf * rng.uniform(*pop.sf_jitter, N)
        size = pop.size_times_sf / sf * rng.uniform(*pop.size_jitter, N)
        self.phases = np.zeros(N)

        strengths = pop.draw_strengths(self.types, rng)
        self.energy_mix, self.untuned_mix = strengths["energy_mix"], strengths["untuned_mix"]
        self.surround_strength, self.cross_strength = strengths["surround"], strengths["cross"]
        self.target_mean = np.exp(rng.uniform(*np.log(pop.target_mean), N))
        self.baseline = self.target_mean * rng.uniform(*pop.baseline_fraction, N)

        # DoG cells
        is_dog = self.types == "dog"
        self.dog_sigma_center = np.where(
            is_dog, pop.dog_sigma_center * rng.uniform(0.9, 1.1, N), np.nan
        )
        self.dog_sigma_surround = 3.0 * self.dog_sigma_center
        # surround integral = 0.9 x centre integral:  a_sur * 9 = 0.9 (1 + a_sur)
        a_sur = 0.9 / (9.0 - 0.9)
        self.dog_a_surround = np.where(is_dog, a_sur, np.nan)
        for n in np.flatnonzero(is_dog):
            sf[n] = _dog_peak_sf(self.dog_sigma_center[n], self.dog_sigma_surround[n], 1.0, a_sur)
            size[n] = 2.0 * self.dog_sigma_center[n]
        self.spatial_frequencies, self.sizes = sf, size

        # ---- filters (4, N, H, W): even, odd at theta; even, odd at theta + pi/2 ----
        x = torch.tensor(self.rf_positions[:, 0], dtype=torch.float32)
        y = torch.tensor(self.rf_positions[:, 1], dtype=torch.float32)
        th = torch.tensor(self.preferred_orientations, dtype=torch.float32)
        sft = torch.tensor(np.where(is_dog, pop.base_sf, sf), dtype=torch.float32)
        szt = torch.tensor(
            np.where(is_dog, pop.size_times_sf / pop.base_sf, size), dtype=torch.float32
        )
        env = gabor(x, y, szt, 0.0, 2.0, th, 0.0, height, width)[:, 0]
        filt = []
        for dth, tau in [
            (0.0, 0.0),
            (0.0, math.pi / 2),
            (math.pi / 2, 0.0),
            (math.pi / 2, math.pi / 2),
        ]:
            g = gabor(x, y, szt, sft, 2.0, th + dth, tau, height, width)[:, 0]
            filt.append(_dc_free_unit(g, env))
        filt = torch.stack(filt)  # (4, N, H, W)
        if is_dog.any():
            idx = torch.from_numpy(np.flatnonzero(is_dog))
            d = dog_stimulus(
                x[idx],
                y[idx],
                torch.tensor(self.dog_sigma_center[is_dog], dtype=torch.float32),
                torch.tensor(self.dog_sigma_surround[is_dog], dtype=torch.float32),
                1.0,
                a_sur,
                height,
                width,
            )[:, 0]
            filt[0, idx] = d / d.flatten(1).norm(dim=1).view(-1, 1, 1)
            filt[1, idx] = 0.0
        self.register_buffer("filters", filt.reshape(4 * N, height * width).contiguous())

        # ---- pooling weights on the energy map: centre Gaussian and surround annulus ----
        s = torch.tensor(size / 2.0, dtype=torch.float32).view(-1, 1, 1)
        s = torch.where(
            torch.from_numpy(is_dog).view(-1, 1, 1),
            torch.tensor(pop.size_times_sf / pop.base_sf / 2.0),
            s,
        )
        # the energy map is evaluated on the stride-2 grid (rows 0, 2, ..., cols 0, 2, ...)
        ii = torch.arange(0, height, 2, dtype=torch.float32).view(1, -1, 1)
        jj = torch.arange(0, width, 2, dtype=torch.float32).view(1, 1, -1)
        r2 = (ii - y.view(-1, 1, 1)) ** 2 + (jj - x.view(-1, 1, 1)) ** 2
        wc = torch.exp(-r2 / (2 * (0.5 * s) ** 2))
        ws = (
            torch.exp(-r2 / (2 * (3.0 * s) ** 2)) * (1 - torch.exp(-r2 / (2 * (2.0 * s) ** 2))) ** 2
        )
        wc = wc / wc.sum((1, 2), keepdim=True)
        ws = ws / ws.sum((1, 2), keepdim=True)
        self.register_buffer("pool_weights", torch.cat([wc, ws]).reshape(2 * N, -1).contiguous())

        # ---- energy-map kernels (FFT of complex Gabors at pop.base_sf, 8 orientations) ----
        # padded grid 72 x 96 (fast FFT sizes, zero padding = gray); the filtered images are
        # band-limited (|f| < 0.13 c/px) so they are computed on the stride-2 grid exactly by
        # keeping the central half of the spectrum.
        self.pad_rows, self.pad_cols = 18, 16
        Hp, Wp = height + 2 * self.pad_rows, width + 2 * self.pad_cols
        if Hp % 4 or Wp % 4 or height % 2 or width % 2:
            raise ValueError(f"VirtualV1: height and width must be even, got {height} x {width}")
        ths = (
            torch.arange(N_ENERGY_ORIENTATIONS, dtype=torch.float32)
            * math.pi
            / N_ENERGY_ORIENTATIONS
        )
        cx, cy = float(Wp // 2), float(Hp // 2)
        e_env = gabor(cx, cy, pop.size_times_sf / pop.base_sf, 0.0, 2.0, 0.0, 0.0, Hp, Wp)[:, 0]
        ge = _dc_free_unit(
            gabor(cx, cy, pop.size_times_sf / pop.base_sf, pop.base_sf, 2.0, ths, 0.0, Hp, Wp)[
                :, 0
            ],
            e_env,
        )
        go = _dc_free_unit(
            gabor(
                cx, cy, pop.size_times_sf / pop.base_sf, pop.base_sf, 2.0, ths, math.pi / 2, Hp, Wp
            )[:, 0],
            e_env,
        )
        h = torch.fft.ifftshift(torch.complex(ge, go), dim=(-2, -1))
        K = torch.fft.fft2(h)
        self._rows = torch.cat([torch.arange(Hp // 4), torch.arange(Hp - Hp // 4, Hp)])
        self._cols = torch.cat([torch.arange(Wp // 4), torch.arange(Wp - Wp // 4, Wp)])
        self.register_buffer("energy_kernels", K[:, self._rows][:, :, self._cols].contiguous())

        as_t = lambda v: torch.tensor(np.asarray(v), dtype=torch.float32)  # noqa: E731
        self.register_buffer("m", as_t(self.energy_mix))
        self.register_buffer("u", as_t(self.untuned_mix))
        self.register_buffer("k_sur", as_t(self.surround_strength))
        self.register_buffer("k_cross", as_t(self.cross_strength))
        self.register_buffer("base", as_t(self.baseline))
        for name in ("s0", "c0", "d0", "gain"):
            self.register_buffer(name, torch.ones(N))

        if calibration_images is None:
            raw = natural_images(600, seed=[int(seed), 7919], height=height, width=width)
            calibration_images = (raw - raw.mean()) / raw.std()
        self.calibrate(torch.as_tensor(np.asarray(calibration_images), dtype=torch.float32))

    # ------------------------------------------------------------------------------------------
    @property
    def pixels_per_degree(self) -> float:
        """Canvas pixels per degree: the images fill the Sensorium screen (`insilico.units`)."""
        return sensorium_pixels_per_degree(self.image_shape, "VirtualV1 canvas")

    def energy_map(self, x: torch.Tensor) -> torch.Tensor:
        """Orientation-untuned local energy ``sum_theta |x * h_theta|^2`` of images (B, 1, H, W)
        on the stride-2 grid: ``(B, (H/2) * (W/2))`` (rows 0, 2, ..., columns 0, 2, ...)."""
        pr, pc = self.pad_rows, self.pad_cols
        xp = F.pad(x[:, 0], (pc, pc, pr, pr))
        Hp, Wp = xp.shape[-2:]
        X = torch.fft.fft2(xp)
        X = X[:, self._rows.to(X.device)][:, :, self._cols.to(X.device)]  # central half spectrum
        R = torch.fft.ifft2(X[:, None] * self.energy_kernels[None]) * 0.25  # (B, O, Hp/2, Wp/2)
        E = (R.real**2 + R.imag**2).sum(1)
        E = E[:, pr // 2 : pr // 2 + self.height // 2, pc // 2 : pc // 2 + self.width // 2]
        return E.reshape(x.shape[0], -1)

    def _components(self, x: torch.Tensor, own: torch.Tensor | None = None):
        """(drive, S, C) of images (B, 1, H, W): each (B, N) for every neuron, or (B, 1) for
        neuron ``own[b]`` (B,) of image b only (its filters and pools alone)."""
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[2:] != (self.height, self.width):
            raise ValueError(
                f"VirtualV1 expects images (B, 1, {self.height}, {self.width}); "
                f"got {tuple(x.shape)}"
            )
        x = x.to(self.filters.dtype)
        B, N = x.shape[0], self.n_neurons
        if own is None:
            L = (x.flatten(1) @ self.filters.T).view(B, 4, N)
            P = (self.energy_map(x) @ self.pool_weights.T).clamp_min(0).view(B, 2, N)
        else:
            L = _own_product(x.flatten(1), self.filters.view(4, N, -1), own)
            P = _own_product(self.energy_map(x), self.pool_weights.view(2, N, -1), own)
            P = P.clamp_min(0)
        m, u = self._per_neuron("m", own), self._per_neuron("u", own)
        Le, Lo, Lpe, Lpo = L.unbind(1)
        tuned = (1 - m) * F.relu(Le) + m * torch.sqrt(Le**2 + Lo**2 + _EPS)
        untuned = torch.sqrt(P[:, 0] + _EPS)
        drive = (1 - u) * tuned + u * untuned
        S = torch.sqrt(P[:, 1] + _EPS)
        C = torch.sqrt(Lpe**2 + Lpo**2 + _EPS)
        return drive, S, C

    def _per_neuron(self, name: str, own: torch.Tensor | None) -> torch.Tensor:
        """Buffer ``name`` (N,), or its values (B, 1) for the neurons ``own`` (B,)."""
        value = getattr(self, name)
        return value if own is None else value[own, None]

    def _rates(self, x, own=None, surround: bool = True, gain=None) -> torch.Tensor:
        """Rates (B, N), or (B, 1) with ``own`` (see `_components`)."""
        drive, S, C = self._components(x, own)
        p = {k: self._per_neuron(k, own) for k in ("k_sur", "k_cross", "s0", "c0", "d0")}
        if not surround:
            S = p["s0"].expand_as(S)
        z = drive / (1 + p["k_sur"] * S / p["s0"] + p["k_cross"] * C / p["c0"]) / p["d0"]
        modulation = 1.0 if gain is None else gain.to(z).view(-1, 1)
        return self._per_neuron("base", own) + self._per_neuron("gain", own) * modulation * (
            z**EXPONENT
        )

    def forward(
        self, x: torch.Tensor, surround: bool = True, gain: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Rates (B, N). ``surround=False``: the surround term held at its natural-image median
        (S = s0), i.e. the same neurons without surround modulation (a ground-truth ablation).
        gain: (B,) factor on every neuron's stimulus drive per image (behaviour); None: 1."""
        return self._rates(x, None, surround, gain)

    def respond_own(self, images: torch.Tensor, neuron_index) -> torch.Tensor:
        """Rate (M,) of neuron ``neuron_index[m]`` to ``images[m]`` (M, 1, H, W): ``forward``'s,
        with only that neuron's filters and pools (the direct path of
        `insilico.model.own_responses`; N times fewer products than ``forward``)."""
        own = torch.as_tensor(neuron_index, dtype=torch.long, device=self.filters.device)
        return self._rates(images, own)[:, 0]

    @torch.no_grad()
    def calibrate(self, images: torch.Tensor, batch_size: int = 250) -> None:
        """Set s0, c0 (median pools), d0 and gain (mean rate = target_mean) on ``images``."""
        images = images.to(self.filters.device)
        parts = [
            self._components(images[i : i + batch_size]) for i in range(0, len(images), batch_size)
        ]
        drive, S, C = (torch.cat(p) for p in zip(*parts))
        self.s0.copy_(S.median(0).values)
        self.c0.copy_(C.median(0).values)
        v = drive / (1 + self.k_sur * S / self.s0 + self.k_cross * C / self.c0)
        self.d0.copy_(v.mean(0))
        zp = (v / self.d0) ** EXPONENT
        tm = torch.as_tensor(self.target_mean, dtype=torch.float32, device=self.s0.device)
        self.gain.copy_((tm - self.base) / zp.mean(0))

    @torch.no_grad()
    def rates(self, images, batch_size: int = 256, gain=None) -> np.ndarray:
        """Noiseless rates (T, N) as numpy for standardized images (T, 1, H, W), in batches;
        gain: (T,) per-image factor on the stimulus drive (`forward`), None: 1."""
        dev = self.filters.device
        out = []
        for i in range(0, len(images), batch_size):
            xb = torch.as_tensor(np.asarray(images[i : i + batch_size]), dtype=torch.float32).to(
                dev
            )
            g = None if gain is None else torch.as_tensor(gain[i : i + batch_size]).to(dev)
            out.append(self(xb, gain=g).cpu())
        return torch.cat(out).numpy()

    # ------------------------------------------------------------------------------------------
    @property
    def truth(self) -> pd.DataFrame:
        """One row per neuron with every ground-truth parameter."""
        return pd.DataFrame(
            {
                "unit_id": np.arange(1, self.n_neurons + 1),
                "type": self.types,
                "rf_x": self.rf_positions[:, 0],
                "rf_y": self.rf_positions[:, 1],
                "orientation": self.preferred_orientations,
                "sf": self.spatial_frequencies,
                "size": self.sizes,
                "phase": self.phases,
                "energy_mix": self.energy_mix,
                "untuned_mix": self.untuned_mix,
                "surround_strength": self.surround_strength,
                "cross_strength": self.cross_strength,
                "dog_sigma_center": self.dog_sigma_center,
                "dog_sigma_surround": self.dog_sigma_surround,
                "dog_a_surround": self.dog_a_surround,
                "baseline": self.baseline,
                "target_mean": self.target_mean,
                "gain": self.gain.detach().cpu().numpy().astype(np.float64),
                "exponent": np.full(self.n_neurons, EXPONENT),
            }
        )


# ----------------------------------------------------------------------------------------------
# scans
# ----------------------------------------------------------------------------------------------
@dataclass
class SimulatedScan:
    """One simulated scan in Sensorium's layout. T trials, N neurons."""

    name: str  # "animal_id-session-scan_idx", e.g. "90001-1-1"
    animal_id: int
    session: int
    scan_idx: int
    images: np.ndarray  # (T, 1, 36, 64) float32, raw [0, 255]
    responses: np.ndarray  # (T, N) float32 Poisson counts
    rates: np.ndarray  # (T, N) float32 noiseless expected counts
    tiers: np.ndarray  # (T,) str: "train" / "validation" / "test"
    image_ids: np.ndarray  # (T,) int64
    model: VirtualV1
    pixel_mean: float
    pixel_std: float
    unit_ids: np.ndarray  # (N,) int64
    cell_motor_coordinates: np.ndarray  # (N, 3) float32, um
    area: np.ndarray  # (N,) str "V1"
    layer: np.ndarray  # (N,) str "L2/3"
    truth: pd.DataFrame = field(repr=False, default=None)
    behavior: np.ndarray | None = None  # (T, 3) pupil dilation, its derivative, running speed
    pupil_center: np.ndarray | None = None  # (T, 2) eye-camera pixels
    eye_shift: np.ndarray | None = None  # (T, 2) canvas px the RFs move on the screen (x, y)

    def standardized(self) -> np.ndarray:
        """The images as the model saw them: (raw - pixel_mean) / pixel_std."""
        return (self.images - self.pixel_mean) / self.pixel_std


def simulate_scans(
    n_scans: int = 2,
    n_neurons: int = 300,
    n_train: int = 4000,
    n_validation: int = 500,
    n_test_images: int = 100,
    n_repeats: int = 10,
    seed: int = 0,
    device=None,
    population: Population | str | dict = "default",
    behavior: bool = False,
) -> list[SimulatedScan]:
    """Simulate ``n_scans`` scans of a virtual V1 (see the module docstring).

    Per scan: ``n_train + n_validation + n_test_images * n_repeats`` trials, shuffled; its own
    images and its own ``n_neurons`` neurons drawn from ``population`` (a ``Population``, a name
    in ``simulator.population.POPULATIONS`` or a TOML file; default: six types in equal numbers).
    behavior: each trial also records behaviour and pupil centre, which modulate the responses
    (module doc, "Behaviour").
    """
    population = load_population(population)
    scans = []
    for s in range(n_scans):
        rng = np.random.default_rng([int(seed), s, 1])
        n_unique = n_train + n_validation + n_test_images
        raw = natural_images(n_unique, seed=[int(seed), s, 2])
        tier_u = np.array(
            ["train"] * n_train + ["validation"] * n_validation + ["test"] * n_test_images
        )
        pixel_mean = float(raw[:n_train].mean()) if n_train else float(raw.mean())
        pixel_std = float(raw[:n_train].std()) if n_train else float(raw.std())
        model = VirtualV1(n_neurons, seed=int(seed) * 1000 + s, population=population)
        if device is not None:
            model = model.to(device)
        rates_u = model.rates((raw - pixel_mean) / pixel_std)
        trial_img = np.concatenate(
            [
                np.arange(n_train + n_validation),
                np.repeat(np.arange(n_train + n_validation, n_unique), n_repeats),
            ]
        )
        trial_img = rng.permutation(trial_img)
        rates = rates_u[trial_img].astype(np.float32)
        trial_behavior = {}
        if behavior:
            trial_behavior = _draw_behavior(len(trial_img), [int(seed), s, 3])
            standardized = (raw[trial_img] - pixel_mean) / pixel_std
            retina = _translate(standardized, -trial_behavior.pop("eye_shift_px"))
            rates = model.rates(retina, gain=trial_behavior.pop("gain")).astype(np.float32)
        responses = rng.poisson(rates).astype(np.float32)
        animal_id, session, scan_idx = 90001 + s, 1, 1
        rf = model.rf_positions
        coords = np.stack(
            [
                15.0 * rf[:, 0] + rng.normal(0, 20, n_neurons),
                15.0 * rf[:, 1] + rng.normal(0, 20, n_neurons),
                rng.uniform(180, 300, n_neurons),
            ],
            1,
        ).astype(np.float32)
        unit_ids = np.arange(1, n_neurons + 1, dtype=np.int64)
        truth = model.truth
        truth.insert(0, "scan", f"{animal_id}-{session}-{scan_idx}")
        scans.append(
            SimulatedScan(
                name=f"{animal_id}-{session}-{scan_idx}",
                animal_id=animal_id,
                session=session,
                scan_idx=scan_idx,
                images=raw[trial_img],
                responses=responses,
                rates=rates,
                tiers=tier_u[trial_img],
                image_ids=(s * 100000 + trial_img).astype(np.int64),
                model=model,
                pixel_mean=pixel_mean,
                pixel_std=pixel_std,
                unit_ids=unit_ids,
                cell_motor_coordinates=coords,
                area=np.array(["V1"] * n_neurons),
                layer=np.array(["L2/3"] * n_neurons),
                truth=truth,
                **trial_behavior,
            )
        )
    return scans


def _draw_behavior(n_trials: int, seed) -> dict[str, np.ndarray]:
    """Per trial: behavior (T, 3), pupil_center (T, 2), eye_shift (T, 2) canvas px, and what the
    simulation applies: gain (T,) and eye_shift_px (T, 2) (module doc, "Behaviour")."""
    rng = np.random.default_rng(seed)
    run_noise, eye = rng.normal(size=n_trials), rng.normal(size=(n_trials, 2))
    running = 10.0 * np.abs(run_noise)
    half_normal_mean, half_normal_sd = (
        10.0 * math.sqrt(2 / math.pi),
        10.0 * math.sqrt(1 - 2 / math.pi),
    )
    run_z = (running - half_normal_mean) / half_normal_sd
    dilation = 1.0 + 0.2 * (0.5 * run_z + math.sqrt(0.75) * rng.normal(size=n_trials))
    derivative = np.gradient(dilation)
    shift = EYE_SHIFT * eye
    return {
        "behavior": np.stack([dilation, derivative, running], 1).astype(np.float32),
        "pupil_center": (np.asarray(PUPIL_REST) + PUPIL_SD * eye).astype(np.float32),
        "eye_shift": shift.astype(np.float32),
        "gain": np.exp(RUNNING_GAIN * run_z).astype(np.float32),
        "eye_shift_px": shift,
    }


def _translate(images: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Images (T, 1, H, W) translated by shift (T, 2) pixels (x, y), bilinear, 0 outside."""
    t, _, h, w = images.shape
    theta = np.zeros((t, 2, 3), np.float32)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = -2 * shift[:, 0] / (w - 1)  # output(p) = input(p - shift)
    theta[:, 1, 2] = -2 * shift[:, 1] / (h - 1)
    x = torch.as_tensor(np.asarray(images, np.float32))
    grid = F.affine_grid(torch.from_numpy(theta), list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=True).numpy()


def write_simulation(out_dir, scans: list[SimulatedScan]) -> list[Path]:
    """Write each scan as a Sensorium folder
    ``out_dir/static{animal}-{session}-{scan_idx}-VirtualV1/``
    (via ``v1twin.sensorium.write_sensorium``) and all neurons' ground truth to
    ``out_dir/truth.csv`` (one row per neuron, ``scan`` column = scan name). Returns the folders."""
    from v1twin.sensorium import write_sensorium

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    folders = []
    for sc in scans:
        folder = out_dir / f"static{sc.animal_id}-{sc.session}-{sc.scan_idx}-VirtualV1"
        write_sensorium(
            folder,
            images=sc.images,
            responses=sc.responses,
            tiers=sc.tiers,
            image_ids=sc.image_ids,
            unit_ids=sc.unit_ids,
            cell_motor_coordinates=sc.cell_motor_coordinates,
            area=sc.area,
            layer=sc.layer,
            animal_id=sc.animal_id,
            session=sc.session,
            scan_idx=sc.scan_idx,
            behavior=sc.behavior,
            pupil_center=sc.pupil_center,
        )
        folders.append(folder)
    truth = pd.concat(
        [sc.truth if sc.truth is not None else sc.model.truth.assign(scan=sc.name) for sc in scans],
        ignore_index=True,
    )
    truth.to_csv(out_dir / "truth.csv", index=False)
    return folders


def _own_product(x: torch.Tensor, weights: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """x (B, D), weights (K, N, D), own (B,) -> (B, K, 1): x[b] . weights[k, own[b]], in chunks
    of images so that the gathered weights stay small."""
    out = [
        torch.einsum("bd,kbd->bk", x[i : i + 1024], weights[:, own[i : i + 1024]])
        for i in range(0, len(x), 1024)
    ]
    return torch.cat(out)[..., None]
