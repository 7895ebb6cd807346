import numpy as np
import pytest

from medfraud.detectors import FAMILY_MODULES, REGISTRY, detector_from_state
from medfraud.detectors.state import decode_array, encode_array


@pytest.mark.parametrize("array", [np.arange(12, dtype=np.float64).reshape(3, 4) / 7,
                                   np.array([-1, 0, 5], dtype=np.int64), np.array([True, False]),
                                   np.zeros((0, 3), dtype=np.float32)])
def test_array_round_trip(array):
    back = decode_array(encode_array(array))
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    back.flags.writeable  # a copy, not a read-only view of the buffer


def test_object_arrays_are_refused():
    with pytest.raises(TypeError, match="object"):
        encode_array(np.array(["a", None], dtype=object))
    with pytest.raises(ValueError, match="dtype"):
        decode_array({"dtype": "|O", "shape": [1], "data": ""})


def test_registry_lists_my_families():
    assert {"rules", "pyod", "lightgbm", "ensemble"} <= set(REGISTRY)
    assert "medfraud.detectors.ensemble" in FAMILY_MODULES


def test_unknown_family_in_state():
    with pytest.raises(KeyError, match="unknown detector family 'nope'"):
        detector_from_state({"family": "nope", "params": {}})
