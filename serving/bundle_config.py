"""The SessionBundleConfig a server runs its SavedModels with, built as `server.cc` builds it:
from the flags (batching, session config file, parallelism, tags, warmup, metagraph trimming,
mixed precision), or, with `--platform_config_file`, from the `tensorflow` platform's
SavedModelBundleSourceAdapterConfig alone (the flags above are then ignored, as there)."""

from __future__ import annotations

import argparse
import logging

import grpc

from serving import config_protos
from serving.errors import ServingError, invalid_argument

TENSORFLOW_PLATFORM = "tensorflow"
DEFAULT_THREAD_POOL = "model_server_batch_threads"
ADAPTER_TYPE = "tensorflow.serving.SavedModelBundleSourceAdapterConfig"

log = logging.getLogger(__name__)


def _from_flags(args: argparse.Namespace) -> config_protos.SessionBundleConfig:
    config = config_protos.SessionBundleConfig()
    if args.enable_batching:
        if args.batching_parameters_file:
            config_protos.parse_text_file(args.batching_parameters_file, config.batching_parameters)
        else:
            config.batching_parameters.thread_pool_name.value = DEFAULT_THREAD_POOL
        if args.enable_per_model_batching_parameters:
            config.enable_per_model_batching_params = True
    elif args.batching_parameters_file:
        raise invalid_argument(
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true."
        )
    session = config.session_config
    if args.tensorflow_session_config_file:
        config_protos.parse_text_file(args.tensorflow_session_config_file, session)
    session.gpu_options.per_process_gpu_memory_fraction = args.per_process_gpu_memory_fraction
    intra, inter = args.tensorflow_intra_op_parallelism, args.tensorflow_inter_op_parallelism
    if intra > 0 and inter > 0 and args.tensorflow_session_parallelism > 0:
        raise invalid_argument(
            "Either configure server_options.tensorflow_session_parallelism or "
            "(server_options.tensorflow_intra_op_parallelism, "
            "server_options.tensorflow_inter_op_parallelism) separately. "
            "You cannot configure all."
        )
    if intra > 0 or inter > 0:
        session.intra_op_parallelism_threads = intra
        session.inter_op_parallelism_threads = inter
    else:
        session.intra_op_parallelism_threads = args.tensorflow_session_parallelism
        session.inter_op_parallelism_threads = args.tensorflow_session_parallelism
    config.saved_model_tags.extend(t for t in args.saved_model_tags.split(",") if t)
    config.enable_model_warmup = args.enable_model_warmup
    if args.num_request_iterations_for_warmup > 0:
        config.model_warmup_options.num_request_iterations.value = (
            args.num_request_iterations_for_warmup
        )
    config.remove_unused_fields_from_bundle_metagraph = (
        args.remove_unused_fields_from_bundle_metagraph
    )
    config.prefer_tflite_model = args.prefer_tflite_model
    config.num_tflite_interpreters_per_pool = args.num_tflite_interpreters_per_pool
    config.num_tflite_pools = args.num_tflite_pools
    config.mixed_precision = args.mixed_precision
    return config


def _from_platform_file(path: str) -> config_protos.SessionBundleConfig:
    platforms = config_protos.parse_text_file(path, config_protos.PlatformConfigMap())
    config = config_protos.SessionBundleConfig()
    for name, platform in platforms.platform_configs.items():
        if name != TENSORFLOW_PLATFORM:
            raise invalid_argument(f"Unsupported platform in platform config: {name}")
        adapter = platform.source_adapter_config
        if not adapter.type_url:
            continue
        if adapter.TypeName() != ADAPTER_TYPE:
            raise invalid_argument(
                f"Unsupported source adapter config for platform {name}: {adapter.TypeName()}; "
                f"expected {ADAPTER_TYPE}"
            )
        unpacked = config_protos.SavedModelBundleSourceAdapterConfig()
        if not adapter.Unpack(unpacked):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid protobuf file: '{path}'")
        config.CopyFrom(unpacked.legacy_config)
    return config


def _apply_mixed_precision(config: config_protos.SessionBundleConfig) -> None:
    """`saved_model_bundle_factory.cc`: bfloat16 turns on the oneDNN rewrite; others warn."""
    if not config.mixed_precision:
        return
    if config.mixed_precision == "bfloat16":
        log.info("Running inference with bfloat16 auto mixed precision")
        rewrite = config.session_config.graph_options.rewrite_options
        rewrite.auto_mixed_precision_onednn_bfloat16 = rewrite.ON
    else:
        log.warning(
            "%s auto mixed precision is not supported. Valid option: bfloat16",
            config.mixed_precision,
        )


def session_bundle_config(args: argparse.Namespace) -> config_protos.SessionBundleConfig:
    """The bundle config for the flags; ServingError (TF's code and text) when a file is
    unreadable or malformed, or the flags contradict each other."""
    if args.platform_config_file:
        config = _from_platform_file(args.platform_config_file)
    else:
        config = _from_flags(args)
    _apply_mixed_precision(config)
    return config
