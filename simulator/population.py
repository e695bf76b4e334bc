"""Population specs: which cell types a virtual V1 holds, in what proportions, with what tuning.

A ``Population`` is everything ``VirtualV1`` draws its neurons from: the mixture of types and the
ranges of every parameter (spatial frequency, RF size, the graded nonlinearity strengths, mean
rate, which sets the Poisson noise level). The pipeline is judged on populations it was never
tuned to, so the simulator offers several named ones (``POPULATIONS``) and reads any other from a
TOML file (``load_population``)::

    name = "my_population"
    base_sf = 0.09                 # cycles / pixel of the simulated canvas
    target_mean = [0.5, 2.0]       # mean spikes per trial (lower = noisier)

    [types]                        # proportions, normalised to sum 1
    simple = 2
    complex = 1
    dog = 1

    [strong]                       # (lo, hi) of each graded strength where it is strong
    surround = [1.0, 3.0]

Keys of ``[weak]`` and ``[strong]``: ``energy_mix``, ``untuned_mix``, ``surround``, ``cross``
(which of them is strong in which type is fixed by the type, see ``STRONG``).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "POPULATIONS",
    "Population",
    "PopulationError",
    "STRONG",
    "TYPES",
    "get_population",
    "load_population",
]

TYPES = ("simple", "complex", "simple_surround", "complex_cross", "dog", "contrast_energy")

# which graded strengths are strong, per type: (energy_mix, untuned_mix, surround, cross)
STRONG = {
    "simple": (False, False, False, False),
    "complex": (True, False, False, False),
    "simple_surround": (False, False, True, False),
    "complex_cross": (True, False, False, True),
    "dog": (False, False, False, False),
    "contrast_energy": (True, True, False, False),
}
MECHANISMS = ("energy_mix", "untuned_mix", "surround", "cross")
LOG_UNIFORM = ("surround", "cross")  # divisive strengths are drawn log-uniformly

# The energy map is computed on the stride-2 grid (Nyquist 0.25 c/px) with Gabors at base_sf, whose
# spectrum reaches about base_sf * (1 + 3 / (pi size_times_sf)) (3 std of the envelope's spectrum).
_ENERGY_NYQUIST = 0.25


class PopulationError(ValueError):
    """A population spec that cannot be used; the message names the file or key at fault."""


def _pair(value, key: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not lo <= hi:
        raise PopulationError(f"population: {key} must be (lo, hi) with lo <= hi, got {value}")
    return lo, hi


@dataclass(frozen=True)
class Population:
    """The distribution a virtual V1's neurons are drawn from.

    types: type -> proportion (any positive weights; counts are rounded by largest remainder).
    base_sf: cycles/pixel; each neuron's sf is base_sf x U(sf_jitter). size_times_sf: the paper's
    sigma times sf (envelope std = size_times_sf / 2 wavelengths); sizes jitter by size_jitter.
    weak / strong: (lo, hi) per mechanism (``MECHANISMS``); ``surround`` and ``cross`` are drawn
    log-uniformly. target_mean: (lo, hi) mean spikes per trial on natural images, log-uniform
    (Poisson noise: lower rates are noisier). baseline_fraction: (lo, hi) of the mean rate that is
    spontaneous. dog_sigma_center: the DoG cells' centre std (px, jittered 10 %). margin: px
    between RF centres and the canvas edge.
    """

    name: str = "default"
    types: dict = field(default_factory=lambda: {t: 1.0 for t in TYPES})
    base_sf: float = 0.07
    sf_jitter: tuple = (0.87, 1.15)
    size_times_sf: float = 0.9
    size_jitter: tuple = (0.9, 1.1)
    weak: dict = field(
        default_factory=lambda: {
            "energy_mix": (0.0, 0.2),
            "untuned_mix": (0.0, 0.1),
            "surround": (0.1, 0.8),
            "cross": (0.1, 0.8),
        }
    )
    strong: dict = field(
        default_factory=lambda: {
            "energy_mix": (0.8, 1.0),
            "untuned_mix": (0.8, 0.95),
            "surround": (2.0, 6.0),
            "cross": (2.0, 6.0),
        }
    )
    target_mean: tuple = (1.0, 4.0)
    baseline_fraction: tuple = (0.15, 0.35)
    dog_sigma_center: float = 2.5
    margin: float = 10.0

    def __post_init__(self):
        unknown = set(self.types) - set(TYPES)
        if unknown:
            raise PopulationError(
                f"population {self.name!r}: unknown types {sorted(unknown)}; known: {TYPES}"
            )
        if not self.types or min(self.types.values()) <= 0:
            raise PopulationError(
                f"population {self.name!r}: types need positive proportions, got {self.types}"
            )
        for table in ("weak", "strong"):
            extra = set(getattr(self, table)) - set(MECHANISMS)
            if extra:
                raise PopulationError(
                    f"population {self.name!r}: unknown [{table}] keys {sorted(extra)}; "
                    f"known: {MECHANISMS}"
                )
        reach = self.base_sf * (1 + 3 / (math.pi * self.size_times_sf))
        if reach >= _ENERGY_NYQUIST:
            raise PopulationError(
                f"population {self.name!r}: the energy map's Gabors at base_sf {self.base_sf} "
                f"reach {reach:.3f} c/px, above the stride-2 grid's {_ENERGY_NYQUIST} c/px"
            )

    def ranges(self, table: str) -> dict[str, tuple[float, float]]:
        """The (lo, hi) of every mechanism in ``weak`` or ``strong``, defaults filled in."""
        default = getattr(Population(), table)
        return {
            m: _pair(getattr(self, table).get(m, default[m]), f"{table}.{m}") for m in MECHANISMS
        }

    def draw_types(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n,) type names in the spec's proportions (largest remainder), shuffled."""
        names = list(self.types)
        p = np.array([self.types[t] for t in names], dtype=float)
        quota = n * p / p.sum()
        counts = np.floor(quota).astype(int)
        counts[np.argsort(counts - quota, kind="stable")[: n - counts.sum()]] += 1
        order = []  # round robin over the types (equal proportions: types[k % len(types)])
        while len(order) < n:
            for i, name in enumerate(names):
                if counts[i] > 0:
                    order.append(name)
                    counts[i] -= 1
        return rng.permutation(np.array(order, dtype=object)).astype(str)

    def draw_strengths(self, types: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Per-neuron graded strengths, strong in the neuron's own type, weak elsewhere."""
        strong_mask = np.array([STRONG[t] for t in types]).reshape(len(types), len(MECHANISMS))
        weak, strong = self.ranges("weak"), self.ranges("strong")
        out = {}
        for j, m in enumerate(MECHANISMS):
            lo = np.where(strong_mask[:, j], strong[m][0], weak[m][0])
            hi = np.where(strong_mask[:, j], strong[m][1], weak[m][1])
            if m in LOG_UNIFORM:
                out[m] = np.exp(rng.uniform(np.log(lo), np.log(hi)))
            else:
                out[m] = rng.uniform(lo, hi)
        return out


POPULATIONS = {
    "default": Population(),
    # fewer types, unequal, finer tuning and smaller RFs than the default
    "fine": Population(
        name="fine",
        types={"simple": 3, "complex": 2, "simple_surround": 1},
        base_sf=0.095,
        size_times_sf=1.0,
    ),
    # coarse, large RFs, strong divisive effects, noisier (lower rates)
    "coarse_noisy": Population(
        name="coarse_noisy",
        types={"complex": 1, "simple_surround": 1, "complex_cross": 1, "dog": 1},
        base_sf=0.05,
        strong={"surround": (1.0, 4.0), "cross": (1.0, 4.0)},
        target_mean=(0.4, 1.6),
    ),
    # many simple-like types in very unequal numbers, wide sf range
    "skewed": Population(
        name="skewed",
        types={
            "simple": 6,
            "complex": 3,
            "simple_surround": 2,
            "complex_cross": 1,
            "dog": 1,
            "contrast_energy": 1,
        },
        sf_jitter=(0.75, 1.3),
        target_mean=(0.7, 3.0),
    ),
}


def get_population(name: str) -> Population:
    """A named population (``POPULATIONS``)."""
    if name not in POPULATIONS:
        raise PopulationError(
            f"unknown population {name!r}; choose from {sorted(POPULATIONS)} or a .toml file"
        )
    return POPULATIONS[name]


def load_population(spec) -> Population:
    """A ``Population`` from a name in ``POPULATIONS``, a TOML file path, or a dict of fields."""
    if isinstance(spec, Population):
        return spec
    if isinstance(spec, dict):
        return _from_dict(spec, "population")
    path = Path(spec)
    if path.suffix != ".toml":
        return get_population(str(spec))
    if not path.is_file():
        raise FileNotFoundError(f"population file {path} does not exist")
    with path.open("rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as err:
            raise PopulationError(f"{path}: not valid TOML: {err}") from err
    data.setdefault("name", path.stem)
    return _from_dict(data, str(path))


def _from_dict(data: dict, where: str) -> Population:
    known = {f.name for f in dataclasses.fields(Population)}
    unknown = set(data) - known
    if unknown:
        raise PopulationError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    tuples = ("sf_jitter", "size_jitter", "target_mean", "baseline_fraction")
    fields = {k: (_pair(v, f"{where}: {k}") if k in tuples else v) for k, v in data.items()}
    for table in ("weak", "strong"):
        if table in fields:
            fields[table] = {m: _pair(v, f"{where}: {table}.{m}") for m, v in fields[table].items()}
    try:
        return Population(**fields)
    except PopulationError as err:
        raise PopulationError(f"{where}: {err}") from err
