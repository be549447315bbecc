"""serving.client: wire encoding (checked against TensorFlow's own), decoding of typed fields and
tensor_content, typed errors, metadata/status views, waiting, and the channel's life cycle."""

from __future__ import annotations

import time
from typing import Any

import grpc
import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.client import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ServingClient,
    ServingClientError,
    make_ndarray,
    make_tensor_proto,
)
from serving.launch import free_port
from tests.tfs_models import half_plus

NUMERIC = [
    np.float32,
    np.float64,
    np.float16,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.bool_,
    np.complex64,
    np.complex128,
    ml_dtypes.bfloat16,
]


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: np.dtype(d).name)
def test_numeric_arrays_travel_as_tensor_content(dtype: Any) -> None:
    array = (np.arange(12).reshape(3, 4) % 7).astype(dtype)
    proto = make_tensor_proto(array)
    assert proto.tensor_content == np.ascontiguousarray(array).tobytes()
    assert proto.dtype == tf.as_dtype(np.dtype(dtype)).as_datatype_enum
    assert [d.size for d in proto.tensor_shape.dim] == [3, 4]
    reference = tf.make_ndarray(proto)  # TensorFlow reads our bytes back identically
    assert reference.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(reference, array)
    decoded = make_ndarray(proto)
    assert decoded.dtype == np.dtype(dtype) and decoded.flags.writeable
    np.testing.assert_array_equal(decoded, array)


def test_non_contiguous_and_big_endian_inputs() -> None:
    base = np.arange(20, dtype=np.float32).reshape(4, 5)
    np.testing.assert_array_equal(tf.make_ndarray(make_tensor_proto(base.T)), base.T)
    big = np.arange(6, dtype=">i4")
    np.testing.assert_array_equal(tf.make_ndarray(make_tensor_proto(big)), np.arange(6))


def test_strings_use_string_val() -> None:
    proto = make_tensor_proto(np.array([["a", "\u00e9"], ["", "xyz"]]))
    assert proto.dtype == types_pb2.DT_STRING and proto.tensor_content == b""
    assert list(proto.string_val) == [b"a", "\u00e9".encode(), b"", b"xyz"]
    np.testing.assert_array_equal(make_ndarray(proto), tf.make_ndarray(proto))
    raw = make_tensor_proto(np.array([b"\x00\xff"], dtype=object))
    assert list(raw.string_val) == [b"\x00\xff"]


@pytest.mark.parametrize(
    "array",
    [
        np.array([1.5, -2.0, 3.25], np.float32),
        np.array([[1, 2], [3, 4]], np.int32),
        np.array([7, 8], np.int64),
        np.array([True, False]),
        np.array([0.5, 2.0], np.float16),
        np.array([1.0, 2.0], np.float64),
        np.array([4, 250], np.uint8),
        np.array(3.0, np.float32),
    ],
    ids=lambda a: f"{a.dtype}{list(a.shape)}",
)
def test_typed_fields_decode_like_tensorflow(array: np.ndarray) -> None:
    """Server answers use typed *_val fields; full, short (last value repeats) and empty."""
    full = tensor_pb2.TensorProto()
    full.CopyFrom(tf.make_tensor_proto(array))
    if full.tensor_content:  # make_tensor_proto packs some dtypes; unpack to typed values
        values = array.reshape(-1)
        field = {
            np.float16: "half_val",
            np.float32: "float_val",
            np.float64: "double_val",
            np.int32: "int_val",
            np.uint8: "int_val",
            np.int64: "int64_val",
            np.bool_: "bool_val",
        }[array.dtype.type]
        getattr(full, field).extend(
            values.view(np.uint16).tolist() if field == "half_val" else values.tolist()
        )
        full.tensor_content = b""
    for proto in (full, _truncated(full, 1), _truncated(full, 0)):
        expected = tf.make_ndarray(proto)
        got = make_ndarray(proto)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)


def _truncated(proto: tensor_pb2.TensorProto, keep: int) -> tensor_pb2.TensorProto:
    out = tensor_pb2.TensorProto()
    out.CopyFrom(proto)
    for field in ("half_val", "float_val", "double_val", "int_val", "int64_val", "bool_val"):
        values = getattr(out, field)
        del values[keep:]
    return out


def test_unsupported_input_dtype_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="no TensorFlow equivalent"):
        make_tensor_proto(np.array(["2020-01-01"], dtype="datetime64[D]"))


# --- against the server under test --------------------------------------------------------------


def test_predict_decodes_outputs(client: ServingClient) -> None:
    x = np.array([1.0, 2.0, 5.0], np.float32)
    out = client.predict({"x": x}, "half_plus_two")
    assert list(out) == ["y"]
    assert out["y"].dtype == np.float32
    np.testing.assert_array_equal(out["y"], half_plus(x, 2))
    np.testing.assert_array_equal(
        client.predict({"x": x}, "half_plus_two", version_label="stable")["y"], half_plus(x, 1)
    )


def test_errors_carry_the_grpc_code_and_message(client: ServingClient) -> None:
    with pytest.raises(ServingClientError) as info:
        client.predict({"x": np.zeros(1, np.float32)}, "no_such_model")
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert info.value.message == "Servable not found for request: Latest(no_such_model)"
    assert str(info.value) == "NOT_FOUND: Servable not found for request: Latest(no_such_model)"


def test_metadata_and_status_views(client: ServingClient) -> None:
    meta = client.metadata("half_plus_two")
    assert (meta.name, meta.version) == ("half_plus_two", 2)
    assert set(meta.signature_defs) == {"serving_default", "times_three"}
    assert meta.signature_defs["serving_default"].outputs["y"].dtype == types_pb2.DT_FLOAT
    assert client.metadata("half_plus_two", version=1).version == 1
    statuses = client.status("half_plus_two")
    assert [(s.version, s.state, s.error_code, s.error_message) for s in statuses] == [
        (2, "AVAILABLE", 0, ""),
        (1, "AVAILABLE", 0, ""),
    ]
    assert [s.version for s in client.status("half_plus_two", version=1)] == [1]


def test_wait_until_available_returns_the_newest_version(client: ServingClient) -> None:
    assert client.wait_until_available("half_plus_two", timeout=10) == 2


def test_wait_until_available_is_bounded(server: Any) -> None:
    with ServingClient(server.grpc_target) as c:
        start = time.monotonic()
        with pytest.raises(ServingClientError) as info:
            c.wait_until_available("no_such_model", timeout=0.6, interval=0.1)
        assert time.monotonic() - start < 5
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "no_such_model" in info.value.message and "NOT_FOUND" in info.value.message


def test_unreachable_server_is_unavailable() -> None:
    target = f"127.0.0.1:{free_port()}"
    with ServingClient(target, timeout=2) as c, pytest.raises(ServingClientError) as info:
        c.status("any")
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


def test_request_larger_than_the_send_limit_fails_on_the_client(server: Any) -> None:
    big = np.zeros(DEFAULT_MAX_MESSAGE_BYTES // 4 + 1024, np.float32)
    with ServingClient(server.grpc_target) as c, pytest.raises(ServingClientError) as info:
        c.predict({"x": big}, "half_plus_two")
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    with ServingClient(server.grpc_target, max_message_bytes=64 * 1024 * 1024) as c:
        assert c.predict({"x": big}, "half_plus_two")["y"].shape == big.shape


def test_context_manager_closes_the_channel(server: Any) -> None:
    with ServingClient(server.grpc_target) as c:
        assert c.wait_until_available("half_plus_two", timeout=10) == 2
    with pytest.raises(ValueError, match="closed channel"):
        c.status("half_plus_two")
