"""Output nonlinearities: a neuron's readout drive (any real number) -> its rate (> 0).

``elu1``: ELU(x) + 1 (Ecker et al. 2019; the published twin). Linear for x > 0, so a readout
that subtracts a surround term from a centre term stays subtractive there.

``exp``: the Poisson GLM's canonical link, exp(x), continued as its tangent line above
x = EXP_LINEAR_ABOVE (rate e^5 ~ 148, far above any natural-image rate in spike counts per
trial) so that extreme in-silico stimuli cannot overflow and the rate stays strictly monotonic.
A readout's subtraction is then a DIVISION of rates: rate = exp(centre) / exp(surround). On
the virtual V1 this, together with a core that reaches the surround, lets the twin learn divisive
surround suppression from natural images (benchmarks/surround.py).

Each entry of ``OUTPUTS`` is ``(forward, inverse)``: ``forward`` maps a torch tensor elementwise;
``inverse`` maps mean rates (numpy, > 0) to the drive that gives them (used to initialise biases).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["OUTPUTS", "EXP_LINEAR_ABOVE"]

EXP_LINEAR_ABOVE = 5.0


def elu1(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x) + 1


def _elu1_inverse(rate: np.ndarray) -> np.ndarray:
    r = np.maximum(rate, 1e-3)
    return np.where(r > 1, r - 1, np.log(r))


def exp_linear(x: torch.Tensor) -> torch.Tensor:
    t = EXP_LINEAR_ABOVE
    return torch.where(x <= t, torch.exp(x.clamp(max=t)), math.exp(t) * (1 + x - t))


def _exp_linear_inverse(rate: np.ndarray) -> np.ndarray:
    r, t = np.maximum(rate, 1e-3), EXP_LINEAR_ABOVE
    return np.where(r <= math.exp(t), np.log(r), r / math.exp(t) - 1 + t)


OUTPUTS = {"elu1": (elu1, _elu1_inverse), "exp": (exp_linear, _exp_linear_inverse)}
