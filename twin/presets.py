"""Named model + training presets.

"paper": the published architecture (3 layers, 16 features x 8 orientations, kernels
13, 5, 5; Ecker et al. 2019, Ustyuzhaninov et al. 2020); meant for a GPU.
"cpu": a small core for 2 CPU cores: 3 layers of 4 features x 8 orientations, kernels 9, 5, 5,
the last dilated 3x with all 5 of its Hermite orders, on the input average-pooled 2x;
exponential output; gray padding; up to 40 epochs, the rate decayed when validation stalls
("plateau").

The reach of 24 px and ``output="exp"`` let the twin learn a divisive surround; the measurements
behind the cpu preset's choices are in docs/benchmarks.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["Preset", "PRECISIONS", "PRESETS", "SCHEDULES", "TrainConfig", "get_preset"]

SCHEDULES = ("plateau", "cosine", "anneal")
PRECISIONS = ("auto", "float32", "bfloat16")


@dataclass
class TrainConfig:
    """Training hyper-parameters.

    lr: peak Adam learning rate. batch_size: trials per scan per step (every step sums
    the losses of one minibatch from every scan). max_epochs: an epoch is
    ceil(largest train tier / batch_size) steps. schedule: how the learning rate moves:

    * "plateau": `lr` until `patience` epochs pass without a validation improvement larger
      than `tolerance`; then the best weights are restored and the rate is multiplied by
      `lr_decay_factor`; after `lr_decay_steps` decays the next plateau stops training.
    * "cosine": a linear warm-up from 0 to `lr` over `warmup_epochs` epochs, then a cosine
      decay to 0 at the end of `max_epochs` epochs, step by step; training runs all
      `max_epochs` (patience and the decay settings are not used).
    * "anneal": `lr` (no warm-up) until the last `anneal_epochs` of `max_epochs` epochs, then
      a linear decay to 0 at the end, step by step; training runs all `max_epochs` (patience
      and the decay settings are not used).

    Either way the weights of the epoch with the best validation correlation are kept.
    readout_reg, core_reg: multipliers of the readouts' and the core's `regularizer()`.
    seed: seeds batch order and readout sampling noise.
    device: None -> "cuda" if available else "cpu".
    precision: of the training steps (`twin.training.autocast`): "auto" (bfloat16 where the
    device computes in it natively, else float32), "float32" or "bfloat16".
    """

    lr: float = 5e-3
    batch_size: int = 64
    max_epochs: int = 200
    patience: int = 5
    tolerance: float = 1e-4
    lr_decay_steps: int = 3
    lr_decay_factor: float = 0.3
    schedule: str = "plateau"
    warmup_epochs: int = 1
    anneal_epochs: int = 3
    readout_reg: float = 1.0
    core_reg: float = 0.0
    seed: int = 0
    device: str | None = None
    precision: str = "auto"

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose from {SCHEDULES}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose from {PRECISIONS}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Preset:
    """core: RotationEquivariantCore kwargs; readout: {"type", **readout kwargs}; train:
    TrainConfig; downsample, output: `Twin` arguments; canvas: (H, W) pixels of the images the
    twin sees (stored images are area-averaged onto it, `twin.data.to_canvas`). Default 36 x 64:
    the Sensorium baseline's, which downsamples the 144 x 256 screen images by 4."""

    core: dict
    readout: dict
    train: TrainConfig = field(default_factory=TrainConfig)
    downsample: int = 1
    output: str = "elu1"
    canvas: tuple = (36, 64)


PRESETS = {
    "paper": Preset(
        core={
            "features": (16, 16, 16),
            "orientations": 8,
            "kernel_sizes": (13, 5, 5),
            "padding": "gray",
        },
        readout={"type": "gaussian", "feature_l1": 1e-2},
        train=TrainConfig(lr=5e-3, batch_size=64, max_epochs=200, patience=5),
    ),
    "cpu": Preset(
        core={
            "features": (4, 4, 4),
            "orientations": 8,
            "kernel_sizes": (9, 5, 5),
            "dilations": (1, 1, 3),
            "n_hermite": (5, 3, 5),
            "padding": "gray",
        },
        readout={"type": "gaussian", "feature_l1": 1e-2},
        train=TrainConfig(lr=1e-2, batch_size=32, max_epochs=40, patience=3, lr_decay_steps=2),
        downsample=2,
        output="exp",
    ),
}


def get_preset(name: str) -> Preset:
    """A copy-safe lookup of a named preset."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    p = PRESETS[name]
    return Preset(
        dict(p.core),
        dict(p.readout),
        TrainConfig(**p.train.to_dict()),
        p.downsample,
        p.output,
        tuple(p.canvas),
    )
