"""twin: the digital twin of mouse V1 (rotation-equivariant CNN core + per-scan readouts).

Pure PyTorch, no database. Channel order of the core output: feature-major (see `twin.core`).
Models take standardized images (see `twin.model`).
"""

from .core import RotationEquivariantCore
from .data import ScanData
from .glm import PoissonGLM
from .hermite import hermite_basis, rotation_matrix
from .metrics import evaluate
from .model import Twin
from .presets import PRESETS, Preset, get_preset
from .readouts import FactorizedReadout, GaussianReadout
from .training import TrainConfig, build_model, fit

__all__ = [
    "FactorizedReadout",
    "GaussianReadout",
    "PRESETS",
    "PoissonGLM",
    "Preset",
    "RotationEquivariantCore",
    "ScanData",
    "TrainConfig",
    "Twin",
    "build_model",
    "evaluate",
    "fit",
    "get_preset",
    "hermite_basis",
    "rotation_matrix",
]
