"""``<array>``: a numpy array stored as its ``.npy`` bytes, uncompressed.

DataJoint's ``<blob>`` zlib-compresses every value; for a scan's thousands of response vectors
that compression is most of the import time. ``<array>`` writes ``np.save`` bytes (no pickle,
readable by any numpy) into the ``bytes`` core type, which both PostgreSQL (bytea) and MySQL
(longblob) hold. Use it for plain numeric arrays; keep ``<blob>`` for anything else.
"""

from __future__ import annotations

import io

import datajoint as dj
import numpy as np


class ArrayCodec(dj.Codec):
    name = "array"

    def get_dtype(self, is_store: bool) -> str:
        return "<hash>" if is_store else "bytes"

    def encode(self, value, *, key=None, store_name=None) -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(value), allow_pickle=False)
        return buffer.getvalue()

    def decode(self, stored, *, key=None) -> np.ndarray:
        return np.load(io.BytesIO(bytes(stored)), allow_pickle=False)

    def validate(self, value) -> None:
        if not isinstance(value, np.ndarray) or value.dtype == object:
            raise TypeError(f"<array> holds numeric numpy arrays, got {type(value).__name__}")
