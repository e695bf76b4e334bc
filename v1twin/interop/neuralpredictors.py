"""Import neuralpredictors 0.3.0 on this project's Python and torch (the optional extra
``v1twin[neuralpredictors]``).

neuralpredictors 0.3.0 (the last release, 2022) does two things at import that fail here:

1. ``from collections import Iterable`` (``layers/cores/conv2d.py``, ``data/transforms.py``) and
   ``from collections import Mapping`` (``data/utils.py``): these aliases were removed from
   :mod:`collections` in Python 3.10. :func:`load` sets ``collections.Iterable`` and
   ``collections.Mapping`` to their :mod:`collections.abc` classes (process-wide, only when absent).
2. ``import torchvision`` (``layers/cores/conv2d.py``). The only torchvision symbol it uses is
   ``torchvision.models.<name>(pretrained=...)``, inside ``TransferLearningCore``; nothing else
   in neuralpredictors touches torchvision. A torchvision that matches this project's torch is
   not always installable (the CPU torch 2.13 here has none; PyPI's fails at import with
   "operator torchvision::nms does not exist"). When the real torchvision cannot be imported,
   :func:`load` registers a stub ``torchvision`` module whose ``models`` raises ImportError on
   any use, so every part of neuralpredictors except ``TransferLearningCore`` works. A real,
   importable torchvision is always used when there is one.

And one at construction: ``layers/hermite.py`` (the Hermite filters of
``RotationEquivariant2dCore``) calls ``math.factorial`` on integral numpy floats, which Python
3.10 stopped accepting. :func:`load` gives that one module (``neuralpredictors.layers.hermite``,
its global ``math``) a copy of :mod:`math` whose ``factorial`` takes integral floats; the
:mod:`math` module itself is untouched.

Nothing in site-packages is edited. Call :func:`load` before importing any neuralpredictors
module; it returns the package, or raises ImportError with the reason.
"""

from __future__ import annotations

import collections
import collections.abc
import importlib
import math
import sys
import types

__all__ = ["load", "NotInstalled", "TORCHVISION_STUB"]


class NotInstalled(ImportError):
    """neuralpredictors is not installed (any other import failure is raised as it is)."""


#: Set on the stub module (``sys.modules["torchvision"].__v1twin_stub__``) when it is in use.
TORCHVISION_STUB = "__v1twin_stub__"


def _missing_torchvision(reason: str):
    def __getattr__(name: str):
        if name.startswith("__"):  # probes such as inspect's hasattr(module, "__file__")
            raise AttributeError(name)
        raise ImportError(
            f"torchvision.models.{name}: torchvision is not importable here ({reason}); "
            "neuralpredictors' TransferLearningCore needs a torchvision that matches torch"
        )

    return __getattr__


def _stub_torchvision(reason: str) -> None:
    """Register a ``torchvision`` whose ``models`` raises ImportError on any attribute."""
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # a half-imported real torchvision
    stub = types.ModuleType("torchvision", "v1twin stub: the real torchvision is not importable")
    models = types.ModuleType("torchvision.models")
    models.__getattr__ = _missing_torchvision(reason)
    stub.models = models
    setattr(stub, TORCHVISION_STUB, reason)
    sys.modules["torchvision"] = stub
    sys.modules["torchvision.models"] = models


def _factorial(n):
    """math.factorial that also takes integral floats (Python < 3.10 did)."""
    if isinstance(n, float) or hasattr(n, "is_integer"):
        if not float(n).is_integer():
            raise ValueError(f"factorial() only accepts integral values, got {n!r}")
        n = int(n)
    return math.factorial(n)


def _patch_hermite() -> None:
    hermite = importlib.import_module("neuralpredictors.layers.hermite")
    if hermite.math is math:
        patched = types.ModuleType("math", "math with a factorial that takes integral floats")
        patched.__dict__.update(math.__dict__)
        patched.factorial = _factorial
        hermite.math = patched


def load() -> types.ModuleType:
    """The ``neuralpredictors`` package, importable (see the module docstring); ImportError if
    it is not installed (``pip install 'v1twin[neuralpredictors]'``) or still fails to import."""
    for name in ("Iterable", "Mapping"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
    try:
        importlib.import_module("torchvision")
    except (
        Exception
    ) as err:  # ImportError, or RuntimeError from a torchvision built for another torch
        _stub_torchvision(f"{type(err).__name__}: {err}")
    try:
        package = importlib.import_module("neuralpredictors")
    except ModuleNotFoundError as err:
        if err.name != "neuralpredictors":
            raise
        raise NotInstalled(
            "neuralpredictors is not installed: pip install 'v1twin[neuralpredictors]'"
        ) from err
    _patch_hermite()
    return package
