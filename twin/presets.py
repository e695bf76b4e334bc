"""Named model + training presets.

"paper": the published architecture (3 layers, 16 features x 8 orientations, kernels
13, 5, 5; Ecker et al. 2019, Ustyuzhaninov et al. 2020); meant for a GPU.
"cpu": a small core (2 layers, 4 features x 8 orientations, kernels 9, 5) for 2 CPU cores.

Measured on the shared 2-core machine (one torch thread, load ~4-6), one training step =
forward + backward + Adam on a batch of 64 images of 36 x 64 for one scan of 300 neurons:
"cpu" 0.5-0.8 s, (8 features x 8 orientations, kernels 9, 5) 2.1 s, "paper" 16 s.
An epoch of 2 scans x 4000 train trials costs ~1.5 min for "cpu". On a simulated scan
(100 neurons, 1200 train trials) batch 32 reached validation correlation 0.38 in 8 epochs
where batch 64 reached 0.29 at the same cost, hence batch 32; with the Gaussian readout's
init_sigma 0.1 instead of 0.3 it reached 0.43 (test correlation 0.41, oracle 0.70,
GLM baseline 0.31).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .training import TrainConfig

__all__ = ["Preset", "PRESETS", "get_preset"]


@dataclass
class Preset:
    """core: RotationEquivariantCore kwargs; readout: {"type", **readout kwargs}; train: TrainConfig."""

    core: dict
    readout: dict
    train: TrainConfig = field(default_factory=TrainConfig)


PRESETS = {
    "paper": Preset(
        core={"features": (16, 16, 16), "orientations": 8, "kernel_sizes": (13, 5, 5)},
        readout={"type": "gaussian", "feature_l1": 1e-2},
        train=TrainConfig(lr=5e-3, batch_size=64, max_epochs=200, patience=5),
    ),
    "cpu": Preset(
        core={"features": (4, 4), "orientations": 8, "kernel_sizes": (9, 5)},
        readout={"type": "gaussian", "feature_l1": 1e-2},
        train=TrainConfig(lr=1e-2, batch_size=32, max_epochs=20, patience=3, lr_decay_steps=2),
    ),
}


def get_preset(name: str) -> Preset:
    """A copy-safe lookup of a named preset."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    p = PRESETS[name]
    return Preset(dict(p.core), dict(p.readout), TrainConfig(**p.train.to_dict()))
