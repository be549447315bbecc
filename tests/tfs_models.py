"""Small TF1-style SavedModels (+ ONNX twins) that the serving contract tests run against.

Built with `tf.compat.v1.saved_model.Builder` like TF Serving's own test models, so the same
repository can be served by the embedded server or by a real tensorflow_model_server:

    python -m tests.tfs_models OUT [--base-path /models]

writes OUT/tfserving/<model>/<version>/, OUT/onnx/<model>/<version>/model.onnx and
OUT/tfserving/models.config whose base paths start with --base-path (default: OUT/tfserving),
e.g. for `docker run -v OUT/tfserving:/models tensorflow/serving --model_config_file=...`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import tensorflow as tf

v1 = tf.compat.v1

# name -> {version: builder}; each builder adds ops to the current graph and returns
# {signature_key: (inputs, outputs)} with alias -> tensor.
Signatures = dict[str, tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]]

LABELS = {"stable": 1, "canary": 2}


def half_plus_builder(offset: float) -> Callable[[], Signatures]:
    """Builds y = x/2 + offset (and a `times_three` signature) into the current graph."""

    def build() -> Signatures:
        x = v1.placeholder(tf.float32, [None], name="x")
        y = tf.add(tf.multiply(x, 0.5), offset, name="y")
        z = tf.multiply(x, 3.0, name="z")
        return {"serving_default": ({"x": x}, {"y": y}), "times_three": ({"x": x}, {"y": z})}

    return build


def _multi_io() -> Signatures:
    a = v1.placeholder(tf.float32, [None, 3], name="a")
    b = v1.placeholder(tf.int64, [None], name="b")
    total = tf.add(a, tf.expand_dims(tf.cast(b, tf.float32), 1), name="sum")
    scaled = tf.multiply(tf.reduce_sum(a, axis=1), 2.0, name="scaled")
    grand = tf.reduce_sum(a, name="total")
    return {
        "serving_default": ({"a": a, "b": b}, {"sum": total, "scaled": scaled}),
        "with_total": ({"a": a, "b": b}, {"sum": total, "total": grand}),
    }


def _strings() -> Signatures:
    text = v1.placeholder(tf.string, [None], name="text")
    same = tf.identity(text, name="text_bytes")
    length = tf.strings.length(text, name="length")
    return {"serving_default": ({"text": text}, {"text_bytes": same, "length": length})}


def _examples() -> Signatures:
    """The tf.Example contract of Classify/Regress: one `inputs` of serialized examples."""
    serialized = v1.placeholder(tf.string, [None], name="tf_example")
    x = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]
    scores = tf.concat([x, 1.0 - x], axis=1, name="scores")
    classes = tf.tile(tf.constant([["low", "high"]]), [tf.shape(x)[0], 1], name="classes")
    value = tf.multiply(x, 2.0, name="value")
    return {
        "serving_default": ({"inputs": serialized}, {"classes": classes, "scores": scores}),
        "regress": ({"inputs": serialized}, {"outputs": value}),
    }


MODELS: dict[str, dict[int, Callable[[], Signatures]]] = {
    "half_plus_two": {1: half_plus_builder(2.0), 2: half_plus_builder(3.0)},
    "multi_io": {1: _multi_io},
    "strings": {1: _strings},
    "examples": {1: _examples},
    # Its versions are added and removed by the version-switching tests.
    "switch": {1: half_plus_builder(2.0)},
}
ONNX_MODELS = ("half_plus_two", "multi_io")


def write_savedmodel(export_dir: Path, build: Callable[[], Signatures]) -> Signatures:
    """One version directory: tag `serve`, predict signatures, no variables."""
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        signatures = build()
        builder = v1.saved_model.Builder(str(export_dir))
        builder.add_meta_graph_and_variables(
            sess,
            [v1.saved_model.tag_constants.SERVING],
            signature_def_map={
                key: v1.saved_model.predict_signature_def(inputs, outputs)
                for key, (inputs, outputs) in signatures.items()
            },
            strip_default_attrs=True,
        )
        builder.save()
    return signatures


def write_onnx(path: Path, build: Callable[[], Signatures]) -> None:
    """The serving_default signature converted by tf2onnx, I/O renamed to the aliases."""
    import tf2onnx

    graph = tf.Graph()
    with graph.as_default():
        inputs, outputs = build()["serving_default"]
    model, _ = tf2onnx.convert.from_graph_def(
        graph.as_graph_def(),
        input_names=[t.name for t in inputs.values()],
        output_names=[t.name for t in outputs.values()],
        opset=17,
    )
    renames = {t.name: alias for alias, t in {**inputs, **outputs}.items()}
    for value in [*model.graph.input, *model.graph.output]:
        value.name = renames.get(value.name, value.name)
    for node in model.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def models_config(base_path: str) -> str:
    """ModelServerConfig text: half_plus_two serves all versions with stable/canary labels."""
    entries = []
    for name in MODELS:
        policy = "  model_version_policy { all {} }\n" if name == "half_plus_two" else ""
        labels = "".join(
            f'  version_labels {{ key: "{k}" value: {v} }}\n'
            for k, v in LABELS.items()
            if name == "half_plus_two"
        )
        entries.append(
            "config {\n"
            f'  name: "{name}"\n'
            f'  base_path: "{base_path.rstrip("/")}/{name}"\n'
            '  model_platform: "tensorflow"\n' + policy + labels + "}\n"
        )
    return "model_config_list {\n" + "".join(entries) + "}\n"


def build_repository(out: Path, base_path: str | None = None) -> Path:
    """Write every model, its ONNX twin and models.config; return the config path."""
    tfs = out / "tfserving"
    for name, versions in MODELS.items():
        for version, build in versions.items():
            write_savedmodel(tfs / name / str(version), build)
            if name in ONNX_MODELS:
                write_onnx(out / "onnx" / name / str(version) / "model.onnx", build)
    config = tfs / "models.config"
    config.write_text(models_config(base_path or str(tfs.resolve())))
    return config


def half_plus(x: np.ndarray, version: int) -> np.ndarray:
    """What half_plus_two version `version` computes."""
    return (x * np.float32(0.5) + np.float32(1.0 + version)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--base-path", default=None, help="base_path prefix in models.config")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(build_repository(args.out, args.base_path))


if __name__ == "__main__":
    main()
