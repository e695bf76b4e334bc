"""Named model + training presets.

"paper": the published architecture (3 layers, 16 features x 8 orientations, kernels
13, 5, 5; Ecker et al. 2019, Ustyuzhaninov et al. 2020); meant for a GPU.
"cpu": a small core (2 layers, 4 features x 8 orientations, kernels 9, 5) on the input
average-pooled 2x, for 2 CPU cores.

One training step (forward + backward + Adam, 2 scans x 32 images, 300 neurons each), measured
on this 2-core machine: kernels 9, 5 at full resolution (36 x 64) 0.36 s; at half resolution
(18 x 32) 0.10 s; kernels 13, 5 at half resolution 0.2 s with 8 features. Pooling 2x makes a
step ~4x cheaper and doubles the core's reach in canvas pixels (kernels 9, 5: 6 grid pixels =
12 canvas pixels), which the virtual V1's receptive fields (~13 px) need: at full resolution
the core saw +-6 px. The virtual V1's surround (13-25 px out) needs more: a third layer dilated
3x (reach 24 px) together with output="exp" gives the twin surround suppression, where either alone
does not (benchmarks/surround.py). It is not the preset because a reach beyond half the canvas
height puts every neuron within `reach` of the border, where the equivariant fast path falls back
to the direct one (insilico.twin_adapter). With batch 32 rather than 64 a simulated scan reached a higher validation
correlation at equal cost, and a Gaussian readout init_sigma of 0.1 beat 0.3.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .training import TrainConfig

__all__ = ["Preset", "PRESETS", "get_preset"]


@dataclass
class Preset:
    """core: RotationEquivariantCore kwargs; readout: {"type", **readout kwargs}; train: TrainConfig;
    downsample, output: `Twin` arguments."""

    core: dict
    readout: dict
    train: TrainConfig = field(default_factory=TrainConfig)
    downsample: int = 1
    output: str = "elu1"


PRESETS = {
    "paper": Preset(
        core={"features": (16, 16, 16), "orientations": 8, "kernel_sizes": (13, 5, 5), "padding": "gray"},
        readout={"type": "gaussian", "feature_l1": 1e-2},
        train=TrainConfig(lr=5e-3, batch_size=64, max_epochs=200, patience=5),
    ),
    "cpu": Preset(
        core={"features": (4, 4, 4), "orientations": 8, "kernel_sizes": (9, 5, 5),
              "dilations": (1, 1, 3), "padding": "gray"},
        readout={"type": "gaussian", "feature_l1": 1e-2},
        train=TrainConfig(lr=1e-2, batch_size=32, max_epochs=20, patience=3, lr_decay_steps=2),
        downsample=2,
        output="exp",
    ),
}


def get_preset(name: str) -> Preset:
    """A copy-safe lookup of a named preset."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    p = PRESETS[name]
    return Preset(dict(p.core), dict(p.readout), TrainConfig(**p.train.to_dict()), p.downsample, p.output)
