"""insilico: optimal stimuli (Gabor, DoG, MEI; per neuron and per cluster), in-silico experiments
and tuning indices (DT Eq. 1-18), for any response model (the twin or the virtual-V1 simulator).

Submodules: ``units`` (canvas pixels and degrees of visual angle), ``stimuli`` (Gabor / DoG /
plaid rendering), ``model`` (the ResponseModel protocol),
``search`` (optimal Gabor / DoG by grid search), ``mei`` (MEIs by gradient ascent),
``experiments`` (tuning curves, run_battery) and ``indices`` (F2/F0, F1/F0, suppression, contrast,
plaid, Gabor-vs-DoG-vs-MEI, non-linearity index, greedy stimulus selection).
"""

from .model import RespondFn, RespondOwnFn, ResponseModel, canvas_center, own_responses

__all__ = ["ResponseModel", "RespondFn", "RespondOwnFn", "canvas_center", "own_responses"]
