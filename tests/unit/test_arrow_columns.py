"""arrow_columns.numeric_array: the same Arrow arrays pa.array makes from
numpy columns (values, types, nulls), without importing numpy.ma or the
pandas shim."""

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from tracer.arrow_columns import numeric_array


@pytest.mark.parametrize("dtype", ["u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f4", "f8"])
def test_same_as_pa_array(dtype):
    values = (np.arange(1000) * 7919 % 251).astype(dtype)
    assert numeric_array(values).equals(pa.array(values))


def test_a_strided_or_big_endian_column_is_read_as_its_values():
    records = np.zeros(5, [("a", "u1"), ("b", ">u4")])
    records["b"] = [1, 2, 3, 0xDEADBEEF, 5]
    assert numeric_array(records["b"]).to_pylist() == [1, 2, 3, 0xDEADBEEF, 5]
    assert numeric_array(np.arange(10, dtype="u8")[::3]).to_pylist() == [0, 3, 6, 9]


def test_a_one_row_field_of_a_structured_array_is_copied_not_shared():
    """numpy flags a one-row field view contiguous (its stride is the
    record's): the Arrow array must not follow later writes to the record,
    as pa.array's copy did not (a writer reuses its record buffer)."""
    for n in (1, 0, 3):
        records = np.zeros(n, [("a", "<u8"), ("b", "<u8")])
        records["b"] = 5
        column = numeric_array(records["b"])
        records["b"] = 7  # the buffer reused
        assert column.to_pylist() == [5] * n == pa.array(np.full(n, 5, "<u8")).to_pylist()
    # a plain contiguous column is still shared, as pa.array shares it
    plain = np.arange(4, dtype="<u8")
    assert numeric_array(plain).buffers()[1].address == plain.ctypes.data


def test_a_type_of_the_same_width_and_a_mask():
    t = pa.timestamp("ns", tz="UTC")
    ns = np.array([0, 1_700_000_000_123_456_789], np.int64)
    assert numeric_array(ns, t).equals(pa.array(ns, t))
    mask = np.array([False, True, False, True, True])
    values = np.arange(5, dtype=np.int32)
    got = numeric_array(values, mask=mask)
    assert got.equals(pa.array(values, mask=mask)) and got.null_count == 3
    assert numeric_array(values, mask=np.zeros(5, bool)).null_count == 0


def test_what_is_not_a_plain_numeric_column_is_refused():
    with pytest.raises(TypeError):
        numeric_array(np.zeros(3, bool))
    with pytest.raises(TypeError):
        numeric_array(np.zeros((3, 2), np.uint8))
    with pytest.raises(TypeError):
        numeric_array(np.zeros(3, np.uint32), pa.uint64())


def test_no_numpy_ma_nor_pandas_imported():
    code = ("import sys, numpy as np; from tracer.arrow_columns import numeric_array; "
            "numeric_array(np.arange(3), mask=np.array([0, 1, 0], bool)); "
            "print('numpy.ma' in sys.modules, 'pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
