"""Behaviour as model inputs, as in the Sensorium baseline (Willeke et al. 2022).

Per trial a scan may record behaviour (B values; Sensorium: pupil dilation, its derivative,
running speed) and the pupil centre (2 values, eye-camera pixels). :class:`ScanBehavior` holds
one scan's standardisation (train-tier mean and s.d.) and its pupil shifter:

* behaviour, standardized, enters the core as B constant input channels. A channel that is
  constant over the image and the same for every orientation is rotation-invariant, so the twin
  feeds it as what a first-layer convolution would make of it: a per-trial, per-feature offset
  ``W b`` (W: (F_first, B), shared by all orientations and pixels, `Twin.behavior_bias`) added
  to the first layer's output. The core stays exactly rotation-equivariant in the image.
* the pupil centre, z-scored, drives a small MLP (2 -> 5 -> tanh -> 2 -> tanh, neuralpredictors'
  ``MLPShifter``) whose output shifts every read point of the scan's readout (core-grid unit
  coordinates, [-1, 1] across the grid). The shift is ``mlp(z) - mlp(0)``, so it is exactly 0 at
  the training-mean pupil centre: there the readout reads at its ``rf_positions``.

In-silico experiments run at the training-mean behaviour and pupil centre: standardized
behaviour 0 (no offset) and no shift, so the twin there is the plain image model.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .data import standardization

__all__ = ["ScanBehavior"]

HIDDEN = 5


class ScanBehavior(nn.Module):
    """One scan's behaviour inputs: standardisation buffers and the pupil shifter.

    Args:
        n_behavior: behaviour values per trial (0: none recorded).
        pupil: whether the scan records the pupil centre (builds the shifter).

    Buffers (set by :meth:`fit`): behavior_mean, behavior_std (n_behavior,);
    pupil_mean, pupil_std (2,) (recorded units).
    """

    def __init__(self, n_behavior: int, pupil: bool):
        super().__init__()
        self.n_behavior, self.pupil = int(n_behavior), bool(pupil)
        self.register_buffer("behavior_mean", torch.zeros(self.n_behavior))
        self.register_buffer("behavior_std", torch.ones(self.n_behavior))
        self.register_buffer("pupil_mean", torch.zeros(2 if pupil else 0))
        self.register_buffer("pupil_std", torch.ones(2 if pupil else 0))
        self.shifter = (
            nn.Sequential(nn.Linear(2, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 2), nn.Tanh())
            if pupil
            else None
        )

    @torch.no_grad()
    def fit(self, behavior: np.ndarray | None, pupil_center: np.ndarray | None) -> ScanBehavior:
        """Set the buffers from the train tier's behaviour (T, n_behavior) and pupil (T, 2)."""
        for name, values in (("behavior", behavior), ("pupil", pupil_center)):
            if getattr(self, f"{name}_mean").numel():
                mean, sd = standardization(values)
                getattr(self, f"{name}_mean").copy_(torch.from_numpy(mean))
                getattr(self, f"{name}_std").copy_(torch.from_numpy(sd))
        return self

    def standardize(self, behavior: torch.Tensor) -> torch.Tensor:
        """Recorded behaviour (T, n_behavior) -> standardized (T, n_behavior)."""
        return (behavior - self.behavior_mean) / self.behavior_std

    def shift(self, pupil_center: torch.Tensor) -> torch.Tensor:
        """Recorded pupil centres (T, 2) -> read-point shifts (T, 2), unit grid coordinates;
        0 at the training-mean centre."""
        z = (pupil_center - self.pupil_mean) / self.pupil_std
        return self.shifter(z) - self.shifter(torch.zeros_like(z[:1]))
