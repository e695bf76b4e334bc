"""The digital twin: one rotation-equivariant core shared by per-scan readouts.

Stimulus units: the model takes STANDARDIZED images, 0 = mean gray and 1 = one standard
deviation of the training-image pixels; `Twin.standardize` converts raw stored units
(those of `ScanData.images`) with the buffers `input_mean`, `input_std`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .core import RotationEquivariantCore
from .outputs import OUTPUTS
from .readouts import READOUTS

__all__ = ["Twin", "canvas_center"]


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
    """

    def __init__(
        self,
        core: dict,
        readout: dict,
        n_neurons: dict,
        image_shape,
        downsample: int = 1,
        output: str = "elu1",
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
        if output not in OUTPUTS:
            raise ValueError(
                f"unknown output nonlinearity {output!r}; choose from {sorted(OUTPUTS)}"
            )
        self.output_name = output
        self.register_buffer("input_mean", torch.tensor(0.0))
        self.register_buffer("input_std", torch.tensor(1.0))

    @property
    def config(self) -> dict:
        """JSON-serializable constructor arguments: `Twin.from_config(config)` rebuilds the
        model."""
        first = next(iter(self.readouts.values()))
        return {
            "core": self.core.config,
            "readout": {"type": self.readout_type, **first.hyperparameters},
            "n_neurons": {name: r.n_neurons for name, r in self.readouts.items()},
            "image_shape": list(self.image_shape),
            "downsample": self.downsample,
            "output": self.output_name,
        }

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
        )

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

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Core output (B, F*O, H/d, W/d) for standardized images (B, 1, H, W)."""
        if self.downsample > 1:
            x = F.avg_pool2d(x, self.downsample)
        return self.core(x)

    def forward(self, x: torch.Tensor, data_key: str | None = None) -> torch.Tensor:
        """Standardized images (B, 1, H, W) -> positive rates (B, N) of one scan's neurons.

        data_key: the scan (readout) name, as in neuralpredictors' ``model(x, data_key=...)``;
        ``twin(x, scan)`` is the same call. None selects the only scan of a one-scan twin.
        """
        if data_key is None:
            if len(self.readouts) != 1:
                raise ValueError(
                    f"this twin has {len(self.readouts)} scans {sorted(self.readouts)}; "
                    "pass data_key= (the scan name)"
                )
            data_key = next(iter(self.readouts))
        return self.output(self._readout(data_key)(self.features(x)))

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
    def predict(self, images_standardized, scan: str, batch_size: int = 256) -> np.ndarray:
        """Rates (B, N) float32 for standardized images (B, 1, H, W), numpy or torch, in eval
        mode."""
        was_training = self.training
        self.eval()
        x = torch.as_tensor(
            np.asarray(images_standardized, dtype=np.float32)
            if not isinstance(images_standardized, torch.Tensor)
            else images_standardized
        )
        out = [
            self(x[i : i + batch_size].to(self.device, torch.float32), scan).float().cpu()
            for i in range(0, len(x), batch_size)
        ]
        self.train(was_training)
        if not out:
            return np.zeros((0, self._readout(scan).n_neurons), dtype=np.float32)
        return torch.cat(out).numpy()

    def barcodes(self, scan: str) -> np.ndarray:
        """Feature weights (N, F, O) of `scan`'s neurons, feature-major (see `twin.core`)."""
        return self._readout(scan).barcodes.detach().cpu().numpy()

    def rf_positions(self, scan: str) -> np.ndarray:
        """RF centres (N, 2) in canvas pixels, columns (x = column, y = row)."""
        grid = self._readout(scan).rf_positions.detach().cpu().numpy()
        return (grid + 0.5) * self.downsample - 0.5  # core-grid pixel centres -> canvas pixels
