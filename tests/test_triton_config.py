"""config.pbtxt is read and checked against the ONNX model at load time, as Triton does, so a
config Triton would refuse fails here first. Texts: core `model_config_utils.cc`
(`ValidateModelConfig`, `ValidateIOShape`), `model_repository_manager.cc` (directory name),
`filesystem/api.cc ReadTextProto`, onnxruntime_backend `ValidateInputs` / `ValidateOutputs` /
`CompareDimsSupported`, backend_common `CheckAllowedModelInput`."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest

from exporter.onnx_format.triton import triton_config
from serving.core import ServerCore, ServerOptions
from serving.errors import ServingError
from serving.model_config import parse_config_text
from serving.onnx_servable import OnnxServable

SIGNATURE = {
    "inputs": {"a": {"dtype": "float32", "shape": [None, 3]},
               "b": {"dtype": "int64", "shape": [None]}},
    "outputs": {"sum": {"dtype": "float32", "shape": [None, 3]},
                "scaled": {"dtype": "float32", "shape": [None]}},
}  # fmt: skip
INPUT_A = '{ name: "a" data_type: TYPE_FP32 dims: [ -1, 3 ] }'
INPUT_B = '{ name: "b" data_type: TYPE_INT64 dims: [ -1 ] }'
OUTPUTS = (
    'output [ { name: "sum" data_type: TYPE_FP32 dims: [ -1, 3 ] }, '
    '{ name: "scaled" data_type: TYPE_FP32 dims: [ -1 ] } ]'
)


@pytest.fixture
def model_dir(model_repo: Path, tmp_path: Path) -> Path:
    """A Triton model directory `multi_io/` holding the ONNX twin of multi_io as version 1."""
    target = tmp_path / "multi_io"
    shutil.copytree(model_repo / "onnx" / "multi_io", target)
    return target


def _load(model_dir: Path, config: str) -> OnnxServable:
    (model_dir / "config.pbtxt").write_text(config)
    return OnnxServable("multi_io", 1, str(model_dir / "1"))


def _refusal(model_dir: Path, config: str) -> str:
    with pytest.raises(ServingError) as info:
        _load(model_dir, config)
    return f"{info.value.code.name}: {info.value.message}"


def test_the_exporters_config_is_what_triton_accepts(model_dir: Path) -> None:
    spec = _load(model_dir, triton_config("multi_io", SIGNATURE)).model_config
    assert spec is not None
    config = spec.config
    assert (config.platform, config.backend, config.max_batch_size) == (
        "onnxruntime_onnx", "onnxruntime", 0
    )  # fmt: skip
    assert config.version_policy.latest.num_versions == 1  # NormalizeModelConfig
    assert [list(io.dims) for io in config.input] == [[-1, 3], [-1]]


def test_the_exporters_config_for_a_scalar_output_is_what_triton_accepts(tmp_path: Path) -> None:
    """A scalar output (ReduceSum over everything) gets dims [1], which Triton accepts."""
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0)],
        "scalar",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, [])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (tmp_path / "scalar" / "1").mkdir(parents=True)
    save(model, str(tmp_path / "scalar" / "1" / "model.onnx"))
    signature = {
        "inputs": {"x": {"dtype": "float32", "shape": [None, 3]}},
        "outputs": {"total": {"dtype": "float32", "shape": []}},
    }
    (tmp_path / "scalar" / "config.pbtxt").write_text(triton_config("scalar", signature))
    config = OnnxServable("scalar", 1, str(tmp_path / "scalar" / "1")).model_config.config
    assert [list(io.dims) for io in config.output] == [[1]]


def test_without_config_pbtxt_triton_auto_completes(model_dir: Path) -> None:
    """AutoCompleteMaxBatch / AutoCompleteIO with default-max-batch-size 4."""
    config = OnnxServable("multi_io", 1, str(model_dir / "1")).model_config.config
    assert config.name == "multi_io" and config.max_batch_size == 4
    assert config.HasField("dynamic_batching")
    dims = {io.name: (list(io.dims), io.HasField("reshape")) for io in config.input}
    assert dims == {"a": ([3], False), "b": ([1], True)}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (f'name: "multi_io" platform: "onnxruntime_onnx" input [ {INPUT_A}, '
         f'{{ name: "b" data_type: TYPE_FP64 dims: [ -1 ] }} ] {OUTPUTS}',
         "INVALID_ARGUMENT: unable to load model 'multi_io', configuration expects datatype "
         "TYPE_FP64 for input 'b', model provides TYPE_INT64"),
        (f'name: "multi_io" platform: "onnxruntime_onnx" max_batch_size: 8 input [ {INPUT_A}, '
         f"{INPUT_B} ] {OUTPUTS}",
         "INVALID_ARGUMENT: model 'multi_io', tensor 'a': the model expects 2 dimensions (shape "
         "[-1,3]) but the model configuration specifies 3 dimensions (an initial batch dimension "
         "because max_batch_size > 0 followed by the explicit tensor shape, making complete "
         "shape [-1,-1,3])"),
        (f'name: "multi_io" platform: "onnxruntime_onnx" input [ '
         f'{{ name: "a" data_type: TYPE_FP32 dims: [ -1, 4 ] }}, {INPUT_B} ] {OUTPUTS}',
         "INVALID_ARGUMENT: model 'multi_io', tensor 'a': the model expects 2 dimensions (shape "
         "[-1,3]) but the model configuration specifies 2 dimensions (shape [-1,4])"),
        (f'name: "multi_io" platform: "onnxruntime_onnx" input [ {INPUT_A}, '
         f'{{ name: "q" data_type: TYPE_INT64 dims: [ -1 ] }} ] {OUTPUTS}',
         "INVALID_ARGUMENT: unexpected inference input 'q', allowed inputs are: a, b"),
        (f'name: "multi_io" platform: "onnxruntime_onnx" input [ {INPUT_A} ] {OUTPUTS}',
         "INVALID_ARGUMENT: unable to load model 'multi_io', configuration expects 1 inputs, "
         "model provides 2"),
        (f'name: "multi_io" platform: "onnxruntime_onnx" input [ {INPUT_A}, {INPUT_B} ] '
         'output [ { name: "total" data_type: TYPE_FP32 dims: [ 1 ] } ]',
         "INVALID_ARGUMENT: unexpected inference output 'total', allowed outputs are: scaled, sum"),
        (f'name: "other" platform: "onnxruntime_onnx" input [ {INPUT_A}, {INPUT_B} ] {OUTPUTS}',
         "INVALID_ARGUMENT: unexpected directory name 'multi_io' for model 'other', directory "
         "name must equal model name"),
        (f'name: "multi_io" platform: "onnxruntime_onnx" input [ {INPUT_A}, '
         f'{{ name: "b" data_type: TYPE_INT64 }} ] {OUTPUTS}',
         "INVALID_ARGUMENT: model input 'b' must specify 'dims' for multi_io"),
        (f'name: "multi_io" platform: "onnxruntime_onnx" max_batch_size: -1 {OUTPUTS}',
         "INVALID_ARGUMENT: 'max_batch_size' must be non-negative value for multi_io"),
        ('name: "multi_io" platform: "onnxruntime_onnx" backend: "tensorflow"',
         "INVALID_ARGUMENT: unexpected 'platform' and 'backend' pair, got:onnxruntime_onnx, "
         "tensorflow"),
    ],
)  # fmt: skip
def test_a_config_triton_refuses_fails_the_load(
    model_dir: Path, config: str, expected: str
) -> None:
    assert _refusal(model_dir, config) == expected


def test_unparsable_config_pbtxt(model_dir: Path) -> None:
    message = _refusal(model_dir, 'name: "multi_io" max_batch_size: "eight"')
    assert message.startswith(
        f"INTERNAL: failed to read text proto from {model_dir / 'config.pbtxt'}: 1:34 :"
    )


def test_the_server_does_not_start_on_a_wrong_config(model_dir: Path) -> None:
    """The load error reaches startup, as a wrong config.pbtxt would fail Triton's load."""
    (model_dir / "config.pbtxt").write_text(
        f'name: "multi_io" platform: "onnxruntime_onnx" input [ {INPUT_A} ] {OUTPUTS}'
    )
    core = ServerCore(
        parse_config_text(
            f'model_config_list {{ config {{ name: "multi_io" base_path: "{model_dir}" '
            'model_platform: "onnx" } }'
        ),
        ServerOptions(max_num_load_retries=0, file_system_poll_wait_seconds=0),
    )
    with pytest.raises(ServingError) as info:
        core.start()
    assert info.value.code == grpc.StatusCode.UNKNOWN
    assert "configuration expects 1 inputs, model provides 2" in info.value.message


def _parameters(**values: str) -> str:
    return " ".join(
        f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in values.items()
    )


def test_the_onnx_runtime_backend_parameters_set_the_session_options(model_dir: Path) -> None:
    """onnxruntime_backend's `ModelState`: graph level 2 disables optimizations; the string
    parameters set threads, execution mode and the memory arena/pattern, as in Triton."""
    import numpy as np
    import onnxruntime as ort

    inputs = {"a": np.ones((2, 3), np.float32), "b": np.arange(2, dtype=np.int64)}
    expected = _load(model_dir, triton_config("multi_io", SIGNATURE)).run(
        "serving_default", inputs, ["sum", "scaled"]
    )
    config = triton_config("multi_io", SIGNATURE) + " optimization { graph { level: 2 } } "
    config += _parameters(
        intra_op_thread_count="1",
        inter_op_thread_count="2",
        execution_mode="1",
        enable_mem_arena="off",
        enable_mem_pattern="FALSE",
    )
    servable = _load(model_dir, config)
    options = servable._session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 2)
    assert options.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert not options.enable_cpu_mem_arena and not options.enable_mem_pattern
    got = servable.run("serving_default", inputs, ["sum", "scaled"])
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value)


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({"execution_mode": "2"},
         "INVALID_ARGUMENT: Invalid configuration value provided. Expected values for  "
         "execution_mode are 0 or 1 but got 2 ."),
        ({"intra_op_thread_count": "many"},
         "INVALID_ARGUMENT: failed to convert 'many' to integral number"),
        ({"enable_mem_arena": "maybe"},
         "INVALID_ARGUMENT: failed to convert 'maybe' to boolean"),
    ],
)  # fmt: skip
def test_onnx_runtime_parameters_triton_refuses_fail_the_load(
    model_dir: Path, parameters: dict[str, str], expected: str
) -> None:
    config = triton_config("multi_io", SIGNATURE) + " " + _parameters(**parameters)
    assert _refusal(model_dir, config) == expected
