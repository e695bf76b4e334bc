"""A model trained elsewhere (a neuralpredictors / nnfabrik ``FiringRateEncoder``, or any
``nn.Module`` called as ``module(images, data_key=scan)`` with a Gaussian readout per scan) as
an insilico ResponseModel, direct path only.

``ExternalResponseModel(module, data_key, image_shape)``::

    model(images (B, 1, H, W)) -> (B, N)     module(images, data_key=data_key), eval mode
    model.rf_positions                       (N, 2) canvas pixels (x = column, y = row)
    model.preferred_orientations             (N,) radians or None (settable)
    model.image_shape                        (H, W)

Stimulus units: the module must take images standardized as insilico renders them (0 = mean
gray, 1 = one standard deviation of the training pixels), which is what the Sensorium loaders'
``NeuroNormalizer`` feeds a neuralpredictors model ((x - mean) / std over all pixels).

RF positions come from the readout's ``mu`` (neuralpredictors' ``FullGaussian2d`` convention:
``module.readout[data_key].mu`` of shape (1, N, 1, 2), ``(x, y)`` in [-1, 1] over the core's
output map, read with ``grid_sample(align_corners=True)`` by default), mapped to canvas pixels
by :func:`grid_to_canvas`, or are passed as ``rf_positions=`` (N, 2) for other readouts.
No fast path: the module declares no equivariance that insilico could use.

Model files (``v1twin import model``; :func:`read_module` reads them, :func:`rebuild` rebuilds
the module from what the database stores):

* ``"state_dict"``: ``torch.save(model.state_dict(), PATH)`` plus a *builder*, the importable
  function ``"package.module:function"`` that ``function(**builder_kwargs)`` returns the
  untrained ``nn.Module`` (neuralpredictors / nnfabrik models are a builder + a state_dict).
  The file is read with ``torch.load(weights_only=True)`` and loaded strictly (every key).
* ``"module"``: ``torch.save(model, PATH)``, the whole pickled ``nn.Module``. Its classes must be
  importable when it is read and whenever the database rebuilds it; unpickling runs code from
  the file, so import only files you trust.

neuralpredictors 0.3 models need :func:`v1twin.interop.neuralpredictors.load` before either is
read or rebuilt (the CLI calls it).
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .model import NeuronSubsetModel, eval_mode

__all__ = [
    "ExternalResponseModel",
    "grid_to_canvas",
    "readout_of",
    "read_module",
    "rebuild",
    "equivariant_features",
]

FORMATS = ("state_dict", "module")


def _builder(spec: str):
    """The function named ``"package.module:function"``; ValueError naming what is missing."""
    module_name, sep, name = str(spec).partition(":")
    if not sep or not module_name or not name:
        raise ValueError(f"builder {spec!r}: expected 'package.module:function'")
    try:
        fn = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"builder {spec!r} cannot be imported: {err}") from err
    if not callable(fn):
        raise ValueError(f"builder {spec!r} is not a function")
    return fn


def _build(spec: str, kwargs: dict, state: dict, where: str) -> nn.Module:
    """``builder(**kwargs)`` with ``state`` loaded strictly; ValueError naming ``where``."""
    module = _builder(spec)(**kwargs)
    if not isinstance(module, nn.Module):
        raise ValueError(f"builder {spec!r} returned {type(module).__name__}, not an nn.Module")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{where} does not fit the model that {spec!r} builds: {err}") from err
    return module.eval()


def _describe(obj) -> str:
    if isinstance(obj, dict):
        return f"a dict of {len(obj)} entries (first keys {list(obj)[:3]})"
    return f"a {type(obj).__module__}.{type(obj).__name__}"


def read_module(
    path, fmt: str, builder: str | None = None, builder_kwargs: dict | None = None
) -> tuple[nn.Module, dict, dict]:
    """Read a model file of format ``fmt`` (module docstring) on the CPU.

    Returns (module in eval mode, spec (JSON: format, builder, builder_kwargs), weights
    ({name: array}: the state_dict, or {"pickle": uint8 bytes of the file})), which
    :func:`rebuild` turns back into the module. A ValueError names the file and what is wrong.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise ValueError(f"{path}: unknown model format {fmt!r}; choose from {FORMATS}")
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    if fmt == "module":
        if builder is not None:
            raise ValueError(f"{path}: format 'module' takes no builder (the file holds the model)")
        raw = path.read_bytes()
        module = _unpickle(raw, str(path))
        return module, {"format": fmt}, {"pickle": np.frombuffer(raw, np.uint8).copy()}
    if builder is None:
        raise ValueError(
            f"{path}: a state_dict needs the builder of its model, a function "
            "'package.module:function' that returns the untrained model (--builder)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means: not a state_dict file
        raise ValueError(
            f"{path} is not a state_dict saved with torch.save (a whole pickled model is read "
            f"without --builder): {type(err).__name__}: {str(err).splitlines()[0]}"
        ) from err
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{path} holds {_describe(state)}, not a state_dict {{name: tensor}}")
    kwargs = dict(builder_kwargs or {})
    module = _build(builder, kwargs, state, str(path))
    spec = {"format": fmt, "builder": builder, "builder_kwargs": kwargs}
    return module, spec, {k: v.detach().cpu().numpy() for k, v in state.items()}


def _unpickle(raw: bytes, where: str) -> nn.Module:
    try:
        module = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any failure means: not a loadable pickled model
        raise ValueError(
            f"{where} does not load as a pickled nn.Module (torch.save(model, path)); "
            "its classes must be importable (neuralpredictors: call "
            f"v1twin.interop.neuralpredictors.load() first): {type(err).__name__}: {err}"
        ) from err
    if not isinstance(module, nn.Module):
        raise ValueError(
            f"{where} holds {_describe(module)}, not an nn.Module: a state_dict needs the "
            "builder of its model (v1twin import model --builder package.module:function)"
        )
    return module.eval()


def rebuild(spec: dict, weights: dict, where: str = "the stored model") -> nn.Module:
    """The module that :func:`read_module` read, from its spec and weights (eval mode, CPU)."""
    if spec.get("format") == "module":
        return _unpickle(np.asarray(weights["pickle"], np.uint8).tobytes(), where)
    state = {k: torch.as_tensor(np.array(v)) for k, v in weights.items()}
    return _build(spec["builder"], spec.get("builder_kwargs", {}), state, where)


def equivariant_features(module: nn.Module, data_key: str) -> tuple[np.ndarray, int]:
    """A neuralpredictors rotation-equivariant model's readout feature vectors: ((N, O*F), O),
    channels rotation-major (``clustering.rotation.as_barcodes(x, O, "rotation-major")`` makes
    them bar codes). Requires a core with ``num_rotations`` (``RotationEquivariant2dCore``) whose
    output is its last layer alone (``stack=-1``: O*F channels) and a factorised readout with
    one feature vector per neuron (``features`` of shape (1, O*F, 1, N), e.g. FullGaussian2d).
    Otherwise ValueError saying why the model has no bar codes."""
    core = getattr(module, "core", None)
    n_rot = getattr(core, "num_rotations", None)
    if n_rot is None:
        raise ValueError(
            f"its core ({type(core).__name__}) is not rotation-equivariant (no num_rotations)"
        )
    readout = readout_of(module, data_key)
    features = getattr(readout, "features", None)
    channels = int(readout.in_shape[0])
    hidden = getattr(core, "hidden_channels", None)
    if not torch.is_tensor(features) or features.dim() != 4 or features.shape[1] != channels:
        raise ValueError(
            f"its readout ({type(readout).__name__}) has no per-neuron feature vectors "
            "(features (1, C, 1, N))"
        )
    if features.shape[0] != 1 or features.shape[2] != 1:
        raise ValueError(f"its readout's features {tuple(features.shape)} are not (1, C, 1, N)")
    if hidden is None or channels != n_rot * int(hidden):
        raise ValueError(
            f"its core outputs {channels} channels, not num_rotations x hidden_channels = "
            f"{n_rot} x {hidden} (a core stacking several layers has per-layer rotation blocks)"
        )
    return features.detach().cpu().numpy()[0, :, 0, :].T.astype(np.float64), int(n_rot)


def readout_of(module: nn.Module, data_key: str) -> nn.Module:
    """``module.readout[data_key]`` (neuralpredictors' MultiReadout, a ModuleDict)."""
    readouts = getattr(module, "readout", None)
    if readouts is None or not hasattr(readouts, "keys"):
        raise ValueError(
            f"{type(module).__name__} has no per-scan readout dict `readout`; "
            "pass rf_positions= (N, 2) canvas pixels"
        )
    if data_key not in readouts.keys():
        raise KeyError(f"unknown data_key {data_key!r}; the model has {sorted(readouts.keys())}")
    return readouts[data_key]


def grid_to_canvas(mu, feature_shape, image_shape, align_corners: bool = True) -> np.ndarray:
    """Readout grid positions (N, 2) (x, y) in [-1, 1] -> canvas pixels (N, 2) (x, y).

    feature_shape: (h, w) of the core's output map; image_shape: (H, W) of the canvas. The map's
    pixels are placed on the canvas by one of the two geometries a convolutional core has:
    the same grid cropped symmetrically (valid convolutions with odd kernels: H - h = W - w,
    even; map pixel i = canvas pixel i + (H - h) / 2), or the canvas downsampled by an integer
    factor d = H / h = W / w (map pixel i covers canvas pixels d*i .. d*i + d - 1). Anything
    else, or a shape that fits both, raises: pass the RF positions yourself.
    """
    mu = np.asarray(mu, dtype=np.float64).reshape(-1, 2)
    (h, w), (big_h, big_w) = (tuple(int(s) for s in feature_shape), tuple(image_shape))
    size = np.array([w, h], dtype=np.float64)
    grid = (mu + 1) / 2 * (size - 1) if align_corners else ((mu + 1) * size - 1) / 2
    crop_h, crop_w = big_h - h, big_w - w
    crop = crop_h == crop_w and crop_h >= 0 and crop_h % 2 == 0
    factor = big_h // h if big_h % h == 0 and big_w % w == 0 and big_h // h == big_w // w else 0
    if crop and factor and crop_h:
        raise ValueError(
            f"a {h} x {w} map on the {big_h} x {big_w} canvas could be cropped or downsampled; "
            "pass rf_positions= (N, 2) canvas pixels"
        )
    if crop:
        return grid + crop_h / 2
    if factor:
        return (grid + 0.5) * factor - 0.5
    raise ValueError(
        f"cannot place a {h} x {w} feature map on the {big_h} x {big_w} canvas (neither a "
        "symmetric crop nor an integer downsampling); pass rf_positions= (N, 2) canvas pixels"
    )


class ExternalResponseModel(NeuronSubsetModel):
    """One scan (``data_key``) of an external model as a ResponseModel; see the module docstring.

    module: called as ``module(images, data_key=data_key)`` -> (B, N) rates >= 0;
    image_shape: (H, W) canvas the module takes; rf_positions: (N, 2) canvas pixels, or None to
    read ``module.readout[data_key].mu``; feature_shape: (h, w) of the core's output map for
    that (default: the readout's ``in_shape[1:]``); neurons: optional subset of neuron indices;
    pixels_per_degree: of the canvas (default: images filling the Sensorium screen,
    ``insilico.units.sensorium_pixels_per_degree``).
    """

    def __init__(
        self,
        module: nn.Module,
        data_key: str,
        image_shape: Sequence[int],
        rf_positions=None,
        preferred_orientations=None,
        feature_shape: Sequence[int] | None = None,
        neurons: Sequence[int] | None = None,
        pixels_per_degree: float | None = None,
    ):
        self.module, self.data_key = module, data_key
        self.image_shape = tuple(int(s) for s in image_shape)
        self._ppd = pixels_per_degree
        if rf_positions is None:
            readout = readout_of(module, data_key)
            mu = getattr(readout, "mu", None)
            if mu is None:
                raise ValueError(
                    f"the readout of {data_key!r} ({type(readout).__name__}) has no Gaussian "
                    "mean `mu`; pass rf_positions= (N, 2) canvas pixels"
                )
            shape = feature_shape or tuple(readout.in_shape)[1:]
            align = getattr(readout, "align_corners", True)
            rf_positions = grid_to_canvas(mu.detach().cpu(), shape, self.image_shape, align)
        pos = np.asarray(rf_positions, dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] != 2:
            raise ValueError(f"rf_positions must have shape (N, 2) (x, y); got {pos.shape}")
        self._select_neurons(len(pos), neurons)
        self._all_positions = pos
        self._pref = None
        self.preferred_orientations = preferred_orientations

    @property
    def rf_positions(self) -> np.ndarray:
        """(N, 2) float64, (x, y) = (column, row) canvas pixels."""
        pos = self._all_positions
        return pos if self._index is None else pos[self._index]

    def parameters(self):
        return self.module.parameters()

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def subset(self, neurons: Sequence[int]) -> ExternalResponseModel:
        """The same model restricted to ``neurons`` (indices into this model's neurons)."""
        idx = np.asarray(neurons, dtype=np.int64).ravel()
        glob = idx if self._index is None else self._index[idx]
        pref = None if self._pref is None else self._pref[idx]
        return ExternalResponseModel(
            self.module,
            self.data_key,
            self.image_shape,
            self._all_positions,
            pref,
            None,
            glob,
            self._ppd,
        )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Standardized images (B, 1, H, W) -> rates (B, N)."""
        if tuple(images.shape[-2:]) != self.image_shape:
            raise ValueError(
                f"images are {tuple(images.shape[-2:])}; the model takes {self.image_shape}"
            )
        with eval_mode(self.module):
            out = self.module(images.to(self.device, torch.float32), data_key=self.data_key)
        if out.ndim != 2 or out.shape[1] != len(self._all_positions):
            raise ValueError(
                f"module(images, data_key={self.data_key!r}) returned {tuple(out.shape)}; "
                f"expected (B, {len(self._all_positions)})"
            )
        return out if self._index is None else out[:, torch.as_tensor(self._index)]
