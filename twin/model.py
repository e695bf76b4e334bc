"""The digital twin: one rotation-equivariant core shared by per-scan readouts.

Stimulus units: the model takes STANDARDIZED images, 0 = mean gray and 1 = one standard
deviation of the training-image pixels; `Twin.standardize` converts raw stored units
(those of `ScanData.images`) with the buffers `input_mean`, `input_std`.

Response units: the twin is trained on STANDARDIZED responses, each neuron's recorded responses
divided by its train-tier s.d. (`ScanData.response_scale`, as neuralpredictors'
``NeuroNormalizer``). Each readout holds that factor as its buffer ``response_scale`` (N,) (ones
for a twin trained unstandardized, or stored before standardisation existed). ``Twin(x, scan)``
returns rates in standardized units (the Poisson loss's); `Twin.predict` and
`insilico.twin_adapter.TwinResponseModel` return them in recorded units (x ``response_scale``).

Behaviour (optional, `twin.behavior`): ``twin(x, scan, behavior=..., pupil_center=...)`` takes
each trial's recorded behaviour and pupil centre; None (the default, and in-silico) means the
scan's training mean.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .behavior import ScanBehavior
from .core import RotationEquivariantCore
from .outputs import OUTPUTS
from .readouts import READOUTS

__all__ = ["SHIFTABLE", "Twin", "canvas_center"]

#: readout types whose read points a pupil shifter can move (`twin.behavior`)
SHIFTABLE = ("gaussian", "gaussian_dn")


def _as_tensor(values) -> torch.Tensor | None:
    """A tensor as given; numpy or lists as float32; None stays None."""
    if values is None or isinstance(values, torch.Tensor):
        return values
    return torch.as_tensor(np.asarray(values, np.float32))


def canvas_center(image_shape) -> tuple[float, float]:
    """(x, y) canvas pixels of the centre of an (H, W) canvas: ((W-1)/2, (H-1)/2).

    The one definition of "centred" for the whole project: the point that the readout's
    translation-equivariant fast path (`Twin.at_rf`) moves onto each RF, and where insilico
    renders centred stimuli. Pixel centres are at integers, so on an even-sized canvas it lies
    between pixels (36 x 64: (31.5, 17.5))."""
    h, w = image_shape
    return (w - 1) / 2, (h - 1) / 2


class Twin(nn.Module):
    """Core + one readout per scan + a positive output nonlinearity (`twin.outputs`).

    Args:
        core: RotationEquivariantCore keyword arguments (its `config`).
        readout: {"type": "gaussian" | "factorized", **readout hyper-parameters}.
        n_neurons: {scan name: N}.
        image_shape: (H, W) of the stimuli in pixels.
        downsample: the input is average-pooled by this factor before the core (1: none). The
            core and readouts then work on an (H/d, W/d) grid; everything the twin reports
            (`rf_positions`, `center`, `reach`) is in canvas pixels all the same.
        output: "elu1" (ELU + 1) or "exp" (exponential, tangent-continued); see `twin.outputs`.
        behavior: {scan name: [B, pupil]} for the scans recorded with behaviour: B values per
            trial (0: none; one B for all scans that have it) and whether the pupil centre is
            recorded (it drives a shifter; only for `SHIFTABLE` readouts, ignored otherwise).
            None: no behaviour inputs (`twin.behavior`).
    """

    def __init__(
        self,
        core: dict,
        readout: dict,
        n_neurons: dict,
        image_shape,
        downsample: int = 1,
        output: str = "elu1",
        behavior: dict | None = None,
    ):
        super().__init__()
        readout = dict(readout)
        kind = readout.pop("type")
        if kind not in READOUTS:
            raise ValueError(f"unknown readout type {kind!r}; choose from {sorted(READOUTS)}")
        self.core = RotationEquivariantCore(**core)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.downsample = int(downsample)
        if self.downsample < 1 or any(s % self.downsample for s in self.image_shape):
            raise ValueError(
                f"downsample={downsample} must be >= 1 and divide the image shape "
                f"{self.image_shape}"
            )
        h, w = (s // self.downsample for s in self.image_shape)
        f, o = self.core.out_features, self.core.orientations
        self.readouts = nn.ModuleDict(
            {name: READOUTS[kind](int(n), f, o, h, w, **readout) for name, n in n_neurons.items()}
        )
        self.readout_type = kind
        for r in self.readouts.values():
            r.register_buffer("response_scale", torch.ones(r.n_neurons))
        self._build_behavior(behavior or {})
        if output not in OUTPUTS:
            raise ValueError(
                f"unknown output nonlinearity {output!r}; choose from {sorted(OUTPUTS)}"
            )
        self.output_name = output
        self.register_buffer("input_mean", torch.tensor(0.0))
        self.register_buffer("input_std", torch.tensor(1.0))

    def _build_behavior(self, behavior: dict) -> None:
        """`behavior` (per-scan ScanBehavior) and `behavior_bias` (F_first, B) (`twin.behavior`)."""
        unknown = sorted(set(behavior) - set(self.readouts))
        counts = {int(b) for b, _ in behavior.values()} - {0}
        if unknown or len(counts) > 1:
            raise ValueError(
                f"behavior {behavior}: scans must be the twin's {sorted(self.readouts)} and share "
                "one number of behaviour values"
            )
        shift = self.readout_type in SHIFTABLE
        self.behavior_spec = {
            name: [int(b), bool(p) and shift] for name, (b, p) in sorted(behavior.items())
        }
        self.behavior = nn.ModuleDict(
            {name: ScanBehavior(b, p) for name, (b, p) in self.behavior_spec.items()}
        )
        self.n_behavior = counts.pop() if counts else 0
        self.behavior_bias = (
            nn.Linear(self.n_behavior, self.core.features[0], bias=False)
            if self.n_behavior
            else None
        )
        if self.behavior_bias is not None:
            nn.init.zeros_(self.behavior_bias.weight)

    @property
    def config(self) -> dict:
        """JSON-serializable constructor arguments: `Twin.from_config(config)` rebuilds the
        model."""
        first = next(iter(self.readouts.values()))
        config = {
            "core": self.core.config,
            "readout": {"type": self.readout_type, **first.hyperparameters},
            "n_neurons": {name: r.n_neurons for name, r in self.readouts.items()},
            "image_shape": list(self.image_shape),
            "downsample": self.downsample,
            "output": self.output_name,
        }
        if self.behavior_spec:  # only when used: stored twins keep their architectures
            config["behavior"] = self.behavior_spec
        return config

    @classmethod
    def from_config(cls, config: dict) -> Twin:
        """A freshly initialised model of that architecture; follow with `load_state_dict`."""
        core = {"padding": "zero", **config["core"]}  # stored before gray padding existed
        return cls(
            core,
            config["readout"],
            config["n_neurons"],
            config["image_shape"],
            config.get("downsample", 1),
            config.get("output", "elu1"),
            config.get("behavior"),
        )

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """`nn.Module.load_state_dict`; a readout's missing ``response_scale`` (a twin stored
        before response standardisation) is ones, i.e. recorded units."""
        state = dict(state_dict)
        for name, r in self.readouts.items():
            state.setdefault(f"readouts.{name}.response_scale", torch.ones_like(r.response_scale))
        return super().load_state_dict(state, strict=strict, assign=assign)

    def trial_inputs(self, scan) -> dict[str, np.ndarray]:
        """The behaviour inputs this twin takes for a ScanData's trials, as ``forward`` /
        ``predict`` keywords: {"behavior": (T, B), "pupil_center": (T, 2)}, those it has."""
        n_behavior, pupil = self.behavior_spec.get(scan.name, (0, False))
        out = {"behavior": scan.behavior if n_behavior else None}
        out["pupil_center"] = scan.pupil_center if pupil else None
        return {k: v for k, v in out.items() if v is not None}

    def response_scale(self, scan: str) -> torch.Tensor:
        """(N,) recorded units per standardized unit of `scan`'s neurons (module doc)."""
        return self._readout(scan).response_scale

    @property
    def device(self) -> torch.device:
        return self.input_mean.device

    def standardize(self, raw):
        """Raw stored units -> standardized units (same type and shape; numpy or torch)."""
        if isinstance(raw, torch.Tensor):
            return (raw - self.input_mean.to(raw.dtype)) / self.input_std.to(raw.dtype)
        return ((raw - self.input_mean.item()) / self.input_std.item()).astype(np.float32)

    def _readout(self, scan: str):
        if scan not in self.readouts:
            raise KeyError(f"unknown scan {scan!r}; model has {sorted(self.readouts)}")
        return self.readouts[scan]

    def features(
        self, x: torch.Tensor, scan: str | None = None, behavior: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Core output (B, F*O, H/d, W/d) for standardized images (B, 1, H, W); behavior:
        `scan`'s recorded behaviour (B, n_behavior), None: its training mean (`twin.behavior`)."""
        x = self._pool(x)
        if behavior is None:
            return self.core(x)
        inputs = self._behavior_of(scan, "behavior")
        z = inputs.standardize(behavior.to(x.device, x.dtype))
        return self.core(x, offset=self.behavior_bias(z))

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """Canvas (B, 1, H, W) -> core grid (B, 1, H/d, W/d): area average by ``downsample``."""
        return F.avg_pool2d(x, self.downsample) if self.downsample > 1 else x

    def own_drive(self, x: torch.Tensor, scan: str, idx: torch.Tensor) -> torch.Tensor:
        """Drive (M,) of `scan`'s neuron idx[m] to standardized image x[m] (M, 1, H, W), at the
        training-mean behaviour and a centred pupil.

        In eval mode, with a readout that reads one point (``reads_one_point``), the core runs
        only in the cone of each neuron's read point (`RotationEquivariantCore.forward_at`):
        the same numbers at a fraction of the cost on a large canvas."""
        readout = self._readout(scan)
        if self.training or not readout.reads_one_point:
            return readout.own(self.features(x), idx)
        grid = self._pool(x)
        return readout.own_at(lambda origin: self.core.forward_at(grid, origin), idx)

    def _behavior_of(self, scan: str, what: str) -> ScanBehavior:
        """The scan's ScanBehavior; ValueError when it was built without `what`."""
        inputs = self.behavior[scan] if scan in self.behavior else None
        size = 0 if inputs is None else (inputs.n_behavior if what == "behavior" else inputs.pupil)
        if not size:
            raise ValueError(
                f"scan {scan!r}: this twin takes no {what} for it (behaviour inputs: "
                f"{self.behavior_spec or 'none'})"
            )
        return inputs

    def forward(
        self,
        x: torch.Tensor,
        data_key: str | None = None,
        behavior: torch.Tensor | None = None,
        pupil_center: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Standardized images (B, 1, H, W) -> positive rates (B, N) of one scan's neurons, in
        standardized response units (module doc).

        data_key: the scan (readout) name, as in neuralpredictors' ``model(x, data_key=...)``;
        ``twin(x, scan)`` is the same call. None selects the only scan of a one-scan twin.
        behavior (B, n_behavior), pupil_center (B, 2): the trials' recorded values
        (`twin.behavior`); None: the scan's training mean.
        """
        if data_key is None:
            if len(self.readouts) != 1:
                raise ValueError(
                    f"this twin has {len(self.readouts)} scans {sorted(self.readouts)}; "
                    "pass data_key= (the scan name)"
                )
            data_key = next(iter(self.readouts))
        readout = self._readout(data_key)
        core_out = self.features(x, data_key, behavior)
        if pupil_center is None:
            return self.output(readout(core_out))
        shifter = self._behavior_of(data_key, "pupil_center")
        shift = shifter.shift(pupil_center.to(x.device, x.dtype))
        return self.output(readout(core_out, shift=shift.to(core_out.dtype)))

    def at_rf(self, x_centred: torch.Tensor, scan: str) -> torch.Tensor:
        """Rates (B, N) for standardized stimuli centred at `center`, each moved onto each
        neuron's RF by the readout (translation-equivariant fast path, see `twin.readouts`)."""
        return self.output(self._readout(scan).at_rf(self.features(x_centred)))

    def output(self, drive: torch.Tensor) -> torch.Tensor:
        """Readout drive (any shape) -> rates > 0, elementwise (the model's output nonlinearity)."""
        return OUTPUTS[self.output_name][0](drive)

    @property
    def center(self) -> tuple[float, float]:
        """(x, y) canvas pixels where `at_rf` assumes centred stimuli: `canvas_center`."""
        return canvas_center(self.image_shape)

    @property
    def reach(self) -> int:
        """Radius (canvas pixels) of the core's receptive field around a read-out point."""
        return self.downsample * self.core.reach()

    @property
    def hidden_reach(self) -> int:
        """Radius (canvas pixels) of the core's last hidden layer's receptive field."""
        return self.downsample * self.core.reach(hidden_only=True)

    def pool_reach(self, scan: str) -> float:
        """Radius (canvas pixels) of the normalisation pool of `scan`'s readout around each read
        point (`twin.readouts.NormalizedGaussianReadout`); 0 for readouts without one."""
        return self.downsample * self._readout(scan).pool_reach

    @torch.no_grad()
    def predict(
        self,
        images_standardized,
        scan: str,
        batch_size: int = 256,
        behavior=None,
        pupil_center=None,
    ) -> np.ndarray:
        """Rates (B, N) float32 in RECORDED response units (x ``response_scale``) for
        standardized images (B, 1, H, W), numpy or torch, in eval mode; behavior (B, n_behavior),
        pupil_center (B, 2): recorded per-trial values, None: the training mean."""
        was_training = self.training
        self.eval()
        inputs = [_as_tensor(v) for v in (images_standardized, behavior, pupil_center)]
        scale = self.response_scale(scan)
        out = []
        for i in range(0, len(inputs[0]), batch_size):
            x, b, p = (None if v is None else v[i : i + batch_size].to(self.device) for v in inputs)
            out.append((self(x.float(), scan, b, p) * scale).float().cpu())
        self.train(was_training)
        if not out:
            return np.zeros((0, self._readout(scan).n_neurons), dtype=np.float32)
        return torch.cat(out).numpy()

    @torch.no_grad()
    def rf_shift(self, scan: str, pupil_center) -> np.ndarray:
        """(T, 2) canvas pixels (x, y) by which `scan`'s pupil shifter moves every read point
        for recorded pupil centres (T, 2); 0 at the training mean (`twin.behavior`)."""
        shifter = self._behavior_of(scan, "pupil_center")
        unit = shifter.shift(torch.as_tensor(np.asarray(pupil_center, np.float32)).to(self.device))
        readout = self._readout(scan)
        half = np.array([(readout.width - 1) / 2, (readout.height - 1) / 2])
        return unit.cpu().numpy() * half * self.downsample

    def barcodes(self, scan: str) -> np.ndarray:
        """Feature weights (N, F, O) of `scan`'s neurons, feature-major (see `twin.core`)."""
        return self._readout(scan).barcodes.detach().cpu().numpy()

    def rf_positions(self, scan: str) -> np.ndarray:
        """RF centres (N, 2) in canvas pixels, columns (x = column, y = row)."""
        grid = self._readout(scan).rf_positions.detach().cpu().numpy()
        return (grid + 0.5) * self.downsample - 0.5  # core-grid pixel centres -> canvas pixels
