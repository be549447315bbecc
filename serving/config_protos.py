"""TF Serving's text-format config files that the tensorflow-serving-api wheel does not ship:
SSLConfig, MonitoringConfig, BatchingParameters, SessionBundleConfig and the
SavedModelBundleSourceAdapterConfig a PlatformConfigMap carries, ThreadPoolFactoryConfig.

The messages are built from descriptors with the package, names and field numbers of TF
Serving's .proto files (`config/ssl_config.proto`, `config/monitoring_config.proto`,
`servables/tensorflow/session_bundle_config.proto`, `saved_model_bundle_source_adapter.proto`,
`thread_pool_factory_config.proto`) and registered in protobuf's default pool, so protobuf's own
text-format parser reads the files (including `[type.googleapis.com/...]` Any expansions) and
rejects exactly what the real binary rejects. Reading follows `util/proto_util.h`
`ParseProtoTextFile`: a missing file is NOT_FOUND, a parse failure is
INVALID_ARGUMENT `Invalid protobuf file: '<path>'` (the parser's own reason is appended)."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    message,
    message_factory,
    text_format,
    wrappers_pb2,
)
from tensorflow.core.protobuf import config_pb2, named_tensor_pb2
from tensorflow_serving.config import platform_config_pb2

from serving.errors import ServingError

_FILE = "frozen_scalars/tf_serving_configs.proto"
_PACKAGE = "tensorflow.serving"
_F = descriptor_pb2.FieldDescriptorProto

# (message, [(field, number, type or ".full.MessageName", repeated)]), as in TF Serving 2.21.
_MESSAGES: tuple[tuple[str, tuple[tuple[str, int, Any, bool], ...]], ...] = (
    (
        "SSLConfig",
        (
            ("server_key", 1, _F.TYPE_STRING, False),
            ("server_cert", 2, _F.TYPE_STRING, False),
            ("custom_ca", 3, _F.TYPE_STRING, False),
            ("client_verify", 4, _F.TYPE_BOOL, False),
        ),
    ),
    (
        "PrometheusConfig",
        (("enable", 1, _F.TYPE_BOOL, False), ("path", 2, _F.TYPE_STRING, False)),
    ),
    (
        "MonitoringConfig",
        (("prometheus_config", 1, ".tensorflow.serving.PrometheusConfig", False),),
    ),
    (
        "BatchingParameters",
        (
            ("max_batch_size", 1, ".google.protobuf.Int64Value", False),
            ("batch_timeout_micros", 2, ".google.protobuf.Int64Value", False),
            ("max_enqueued_batches", 3, ".google.protobuf.Int64Value", False),
            ("num_batch_threads", 4, ".google.protobuf.Int64Value", False),
            ("thread_pool_name", 5, ".google.protobuf.StringValue", False),
            ("enable_large_batch_splitting", 8, ".google.protobuf.BoolValue", False),
            ("max_execution_batch_size", 9, ".google.protobuf.Int64Value", False),
            ("allowed_batch_sizes", 6, _F.TYPE_INT64, True),
            ("pad_variable_length_inputs", 7, _F.TYPE_BOOL, False),
        ),
    ),
    (
        "ModelWarmupOptions",
        (
            ("num_request_iterations", 1, ".google.protobuf.Int32Value", False),
            ("num_model_warmup_threads", 2, ".google.protobuf.Int32Value", False),
            ("model_name", 3, _F.TYPE_STRING, False),
            ("model_version", 4, _F.TYPE_INT64, False),
            ("enable_all_batch_sizes_warmup", 5, _F.TYPE_BOOL, False),
        ),
    ),
    (
        "SessionBundleConfig",
        (
            ("session_target", 1, _F.TYPE_STRING, False),
            ("session_config", 2, ".tensorflow.ConfigProto", False),
            ("batching_parameters", 3, ".tensorflow.serving.BatchingParameters", False),
            ("session_run_load_threadpool_index", 4, ".google.protobuf.Int32Value", False),
            ("experimental_transient_ram_bytes_during_load", 5, _F.TYPE_UINT64, False),
            ("saved_model_tags", 6, _F.TYPE_STRING, True),
            ("experimental_fixed_input_tensors", 778, ".tensorflow.NamedTensorProto", True),
            ("enable_model_warmup", 779, _F.TYPE_BOOL, False),
            ("model_warmup_options", 780, ".tensorflow.serving.ModelWarmupOptions", False),
            ("enable_session_metadata", 781, _F.TYPE_BOOL, False),
            ("remove_unused_fields_from_bundle_metagraph", 782, _F.TYPE_BOOL, False),
            ("prefer_tflite_model", 783, _F.TYPE_BOOL, False),
            ("resource_estimation_uses_validation_result", 784, _F.TYPE_BOOL, False),
            ("num_tflite_interpreters", 785, _F.TYPE_INT32, False),
            ("num_tflite_interpreters_per_pool", 786, _F.TYPE_INT32, False),
            ("num_tflite_pools", 787, _F.TYPE_INT32, False),
            ("wrap_session_with_no_threading_params", 788, _F.TYPE_BOOL, False),
            ("enable_per_model_batching_params", 789, _F.TYPE_BOOL, False),
            ("enable_saved_model_config", 790, _F.TYPE_BOOL, False),
            ("mixed_precision", 791, _F.TYPE_STRING, False),
        ),
    ),
    (
        "SavedModelBundleSourceAdapterConfig",
        (("legacy_config", 1000, ".tensorflow.serving.SessionBundleConfig", False),),
    ),
    (
        "ThreadPoolFactoryConfig",
        (("thread_pool_factory_config", 1, ".google.protobuf.Any", False),),
    ),
)


def _register() -> dict[str, type[message.Message]]:
    """Adds the file to the default pool once (its dependencies are imported above)."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_FILE)
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto(
            name=_FILE,
            package=_PACKAGE,
            syntax="proto3",
            dependency=[
                wrappers_pb2.DESCRIPTOR.name,
                any_pb2.DESCRIPTOR.name,
                config_pb2.DESCRIPTOR.name,
                named_tensor_pb2.DESCRIPTOR.name,
            ],
        )
        for name, fields in _MESSAGES:
            msg = proto.message_type.add(name=name)
            for field, number, kind, repeated in fields:
                entry = msg.field.add(
                    name=field,
                    number=number,
                    label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
                )
                if isinstance(kind, str):
                    entry.type, entry.type_name = _F.TYPE_MESSAGE, kind
                else:
                    entry.type = kind
        pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name, _ in _MESSAGES
    }


_CLASSES = _register()
SSLConfig = _CLASSES["SSLConfig"]
MonitoringConfig = _CLASSES["MonitoringConfig"]
BatchingParameters = _CLASSES["BatchingParameters"]
SessionBundleConfig = _CLASSES["SessionBundleConfig"]
SavedModelBundleSourceAdapterConfig = _CLASSES["SavedModelBundleSourceAdapterConfig"]
ThreadPoolFactoryConfig = _CLASSES["ThreadPoolFactoryConfig"]
PlatformConfigMap = platform_config_pb2.PlatformConfigMap
ConfigProto = config_pb2.ConfigProto


def parse_text(text: str, proto: message.Message, origin: str) -> message.Message:
    """Parses text into `proto`; INVALID_ARGUMENT naming `origin` (a path) on failure."""
    try:
        text_format.Parse(text, proto, descriptor_pool=descriptor_pool.Default())
    except text_format.ParseError as e:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT, f"Invalid protobuf file: '{origin}' ({e})"
        ) from e
    return proto


def read_text_file(path: str) -> str:
    """The read half of `ParseProtoTextFile`, failing as TF's file system does: NOT_FOUND
    `<path>; No such file or directory`, or FAILED_PRECONDITION with the reason."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError as e:
        raise ServingError(grpc.StatusCode.NOT_FOUND, f"{path}; No such file or directory") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, f"{path}; {e}") from e


def parse_text_file(path: str, proto: message.Message) -> message.Message:
    """`ParseProtoTextFile`: reads `path` into `proto`."""
    return parse_text(read_text_file(path), proto, path)
