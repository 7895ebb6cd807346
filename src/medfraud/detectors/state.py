"""Safe, pickle-free detector state: JSON documents with NumPy arrays inlined.

Every detector with learned state offers ``to_state() -> dict`` and the classmethod
``from_state(state)``.  A state is a JSON-serialisable dict with at least ``family`` and
``params`` (the detector's ``get_params()``); arrays are stored by :func:`encode_array`
as base64 of their raw little-endian bytes with dtype and shape, and read back with
``numpy.frombuffer`` (never pickle).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

_ALLOWED_DTYPES = {"<f8", "<f4", "<i8", "<i4", "|u1", "|i1", "|b1"}


def encode_array(array: np.ndarray) -> dict[str, Any]:
    """Encode a numeric array as ``{"dtype", "shape", "data"}`` (JSON-safe).

    Parameters
    ----------
    array : numeric ndarray of any shape (float64, float32, int64, int32, uint8, int8, bool).
    """
    array = np.ascontiguousarray(array)
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    if dtype.str not in _ALLOWED_DTYPES:
        raise TypeError(f"cannot encode array of dtype {array.dtype}; allowed: {sorted(_ALLOWED_DTYPES)}")
    data = array.astype(dtype, copy=False).tobytes()
    return {"dtype": dtype.str, "shape": list(array.shape), "data": base64.b64encode(data).decode("ascii")}


def decode_array(blob: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_array`; returns a writable array."""
    if blob.get("dtype") not in _ALLOWED_DTYPES:
        raise ValueError(f"state array has unsupported dtype {blob.get('dtype')!r}")
    raw = base64.b64decode(blob["data"])
    return np.frombuffer(raw, dtype=np.dtype(blob["dtype"])).reshape(blob["shape"]).copy()


def detector_from_state(state: dict[str, Any]):
    """Rebuild a fitted detector of any family from its ``to_state()`` dict."""
    from medfraud import detectors  # noqa: F401  (fills the registry)
    from medfraud.detectors.base import REGISTRY

    family = state.get("family")
    if family not in REGISTRY:
        raise KeyError(f"state names unknown detector family {family!r}; known: {sorted(REGISTRY)}")
    cls = REGISTRY[family]
    if not hasattr(cls, "from_state"):
        raise NotImplementedError(f"detector family {family!r} cannot be rebuilt from state")
    return cls.from_state(state)
