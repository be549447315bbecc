"""The ONNX Runtime session options a Triton model directory's `config.pbtxt` asks for.

Triton's ONNX Runtime backend (`onnxruntime.cc`, `ModelState` constructor) reads them from the
model configuration before it opens a session: `optimization { graph { level } }` (-1 basic,
1 extended, 2 none, anything else all), and the string `parameters` `execution_mode` (0
sequential, 1 parallel), `intra_op_thread_count` / `inter_op_thread_count` (0: ORT's default, the
number of cores), `enable_mem_arena`, `enable_mem_pattern` and
`session.use_device_allocator_for_initializers`. Values are parsed as backend_common's
`ParseIntValue` / `ParseBoolValue` do, with their error texts, so a config Triton refuses fails
this load too. `intra_op_thread_count: "1"` is the one that matters on a busy CPU server: a
small model then runs in the request's own thread instead of waking ORT's pool for each run
(docs/performance.md measures it).
"""

from __future__ import annotations

import re
from typing import Any

import onnxruntime as ort

from serving.errors import invalid_argument

_GRAPH_LEVELS = {
    -1: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    1: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    2: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}
_INITIALIZER_ALLOCATOR = "session.use_device_allocator_for_initializers"
_LEADING_INT = re.compile(r"\s*[+-]?\d+")


def _int(value: str) -> int:
    """`ParseIntValue` (`std::stoi`: leading whitespace and trailing text are ignored)."""
    match = _LEADING_INT.match(value)
    if match is None:
        raise invalid_argument(f"failed to convert '{value}' to integral number")
    return int(match.group())


def _bool(value: str) -> bool:
    """`ParseBoolValue`: true/on/1 and false/off/0, any case."""
    lowered = value.lower()
    if lowered in ("true", "on", "1"):
        return True
    if lowered in ("false", "off", "0"):
        return False
    raise invalid_argument(f"failed to convert '{value}' to boolean")


def apply(config: Any, options: ort.SessionOptions) -> ort.SessionOptions:
    """Set on `options` what `config` (an `inference.ModelConfig`, or None) asks for."""
    if config is None:
        return options
    if config.HasField("optimization") and config.optimization.HasField("graph"):
        level = config.optimization.graph.level
        options.graph_optimization_level = _GRAPH_LEVELS.get(
            level, ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        )
    params = {key: p.string_value for key, p in config.parameters.items()}
    mode = _int(params.get("execution_mode", "0"))
    if mode not in (0, 1):
        raise invalid_argument(
            "Invalid configuration value provided. Expected values for  execution_mode are 0 "
            f"or 1 but got {mode} ."
        )
    options.execution_mode = (
        ort.ExecutionMode.ORT_SEQUENTIAL if mode == 0 else ort.ExecutionMode.ORT_PARALLEL
    )
    for key, attribute in (
        ("intra_op_thread_count", "intra_op_num_threads"),
        ("inter_op_thread_count", "inter_op_num_threads"),
    ):
        count = _int(params.get(key, "0"))
        if count > 0:
            setattr(options, attribute, count)
    if _INITIALIZER_ALLOCATOR in params:
        options.add_session_config_entry(_INITIALIZER_ALLOCATOR, params[_INITIALIZER_ALLOCATOR])
    if "enable_mem_arena" in params:
        options.enable_cpu_mem_arena = _bool(params["enable_mem_arena"])
    if "enable_mem_pattern" in params:
        options.enable_mem_pattern = _bool(params["enable_mem_pattern"])
    return options
