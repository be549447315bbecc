"""The rewrite pass inlines function calls: graphs with calls in, call-free graphs out, same values.

Each case traces a real `tf.function` holding nested `tf.function`s (the shape Keras 3 gives a
grouped Conv2D: a `_noinline`, `_XlaMustCompile` StatefulPartitionedCall), rewrites its GraphDef
and runs the rewritten graph in a TF Session against the live function.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from exporter.onnx_format.graph_rewrite import (
    rewrite_for_onnx,
    unconvertible_message,
)
from exporter.onnx_format.inline_calls import CALL_OPS

X = np.linspace(-2.0, 2.0, 24, dtype=np.float32).reshape(2, 12)


def _graph(fn: tf.types.experimental.PolymorphicFunction) -> tf.types.experimental.ConcreteFunction:
    return fn.get_concrete_function(tf.TensorSpec([None, 12], tf.float32))


def _run(graph_def: tf.compat.v1.GraphDef, concrete, x: np.ndarray) -> list[np.ndarray]:
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=graph) as session:
            return session.run([t.name for t in concrete.outputs], {concrete.inputs[0].name: x})


def _calls(graph_def: tf.compat.v1.GraphDef) -> list[str]:
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes.extend(function.node_def)
    return [n.name for n in nodes if n.op in CALL_OPS]


@tf.function(jit_compile=True)
def _xla_inner(x):
    return tf.math.erfc(x) * 3.0, tf.reduce_sum(x, axis=1)


@tf.function
def _middle(x):
    a, b = _xla_inner(x + 1.0)
    return a - tf.expand_dims(b, 1)


def test_nested_calls_are_inlined_and_compute_the_same() -> None:
    outer = tf.function(lambda x: _middle(x) * 2.0 + _xla_inner(x)[1][:, None])
    concrete = _graph(outer)
    graph_def = concrete.graph.as_graph_def()
    assert _calls(graph_def), "the fixture must hold calls"
    names = {n.name for n in graph_def.node}
    expected = _run(graph_def, concrete, X)

    summary = rewrite_for_onnx(graph_def)

    assert _calls(graph_def) == []
    assert summary.not_inlined == {}
    # Three calls (two at the top, one nested in _middle), the inner Erfc in both copies.
    assert sum(summary.counts.get(op, 0) for op in CALL_OPS) == 3
    assert summary.counts["Erfc"] == 2
    assert names <= {n.name for n in graph_def.node}  # consumers still find the call's name
    assert len(graph_def.library.function) == 0  # nothing calls the bodies any more
    # 1 - Erf(x) (the Erfc rewrite) rounds differently from Erfc(x): ~4e-6 on these values.
    np.testing.assert_allclose(_run(graph_def, concrete, X), expected, rtol=1e-5, atol=1e-5)


def test_keras_grouped_conv_call_becomes_a_plain_conv() -> None:
    import keras

    layer = keras.layers.Conv2D(4, 3, groups=2, padding="same")
    image = tf.TensorSpec([None, 6, 6, 4], tf.float32)
    concrete = tf.function(lambda x: layer(x)).get_concrete_function(image)
    graph_def = concrete.graph.as_graph_def()
    calls = [n for n in graph_def.node if n.op in CALL_OPS]
    assert len(calls) == 1 and calls[0].attr["_XlaMustCompile"].b  # Keras 3's _conv_xla

    summary = rewrite_for_onnx(graph_def)

    assert summary.to_dict() == {"StatefulPartitionedCall": 1}
    convs = [n for n in graph_def.node if n.op == "Conv2D"]
    assert len(convs) == 1 and convs[0].name.startswith(calls[0].name + "/")


def test_call_inside_a_loop_body_is_inlined_in_function_form() -> None:
    @tf.function
    def loop(x):
        return tf.while_loop(lambda i, y: i < 3, lambda i, y: (i + 1, _middle(y)), (0, x))[1]

    concrete = _graph(loop)
    graph_def = concrete.graph.as_graph_def()
    bodies = [f for f in graph_def.library.function if any(n.op in CALL_OPS for n in f.node_def)]
    assert bodies, "the loop body must call _middle"
    expected = _run(graph_def, concrete, X)

    rewrite_for_onnx(graph_def)

    assert _calls(graph_def) == []
    np.testing.assert_allclose(_run(graph_def, concrete, X), expected, rtol=1e-5, atol=1e-5)


def test_a_call_that_cannot_be_inlined_is_named_with_the_reason() -> None:
    concrete = _graph(tf.function(lambda x: _middle(x)))
    graph_def = concrete.graph.as_graph_def()
    call = next(n for n in graph_def.node if n.op in CALL_OPS)
    call.attr["f"].func.name = "missing_function"

    summary = rewrite_for_onnx(graph_def)

    assert call.op in CALL_OPS  # left as it was
    assert "'missing_function' is not in the graph's library" in summary.not_inlined[call.name]
    message = unconvertible_message([(call.op, call.name)], [], summary.not_inlined)
    assert "cannot be inlined" in message and "missing_function" in message


@pytest.mark.parametrize("op", sorted(CALL_OPS))
def test_both_call_ops_are_in_the_rewrite_table(op: str) -> None:
    from exporter.onnx_format.graph_rewrite import REWRITES
    from exporter.onnx_format.inline_calls import inline_call

    assert REWRITES[op] is inline_call
