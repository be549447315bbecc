"""TF Serving version compatibility: the op table is the real registry of each version, the
reference model loads on the default version, and a graph using an op (or an op attr) that
version lacks is refused in one line naming it, by export, deploy and the checker."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import keras
import pytest
import tensorflow as tf
from tensorflow.python.framework import op_def_registry

from exporter.cli import main
from exporter.errors import ServingCompatError
from exporter.savedmodel.compat import (
    DEFAULT_SERVING_VERSION,
    check_compatible,
    image_tag,
    savedmodel_facts,
    supported_versions,
    version_table,
)


def _write_savedmodel(path: Path, build: Callable[[], tuple[dict, dict]]) -> Path:
    """A TF1 SavedModel (tag serve, defaults stripped) written the way the exporter writes."""
    graph = tf.Graph()
    with graph.as_default():
        inputs, outputs = build()
        signature = tf.compat.v1.saved_model.signature_def_utils.predict_signature_def(
            inputs=inputs, outputs=outputs
        )
        with tf.compat.v1.Session(graph=graph) as session:
            builder = tf.compat.v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(
                session,
                ["serve"],
                signature_def_map={"serving_default": signature},
                strip_default_attrs=True,
            )
            builder.save()
    return path


def _jxl_graph() -> tuple[dict, dict]:
    contents = tf.compat.v1.placeholder(tf.string, [], name="contents")
    image = tf.io.decode_jxl(contents, channels=3)
    return {"contents": contents}, {"image": image}


def _tensor_list_int64_shape() -> tuple[dict, dict]:
    x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
    shape = tf.constant([3], tf.int64)  # Tshape=int64: not the default, so not stripped
    handle = tf.raw_ops.TensorListFromTensor(tensor=x, element_shape=shape)
    item = tf.raw_ops.TensorListGetItem(
        input_handle=handle, index=0, element_shape=shape, element_dtype=tf.float32
    )
    return {"x": x}, {"y": item}


def test_the_table_is_each_versions_registry() -> None:
    """The default version is covered, and the table's 2.20 really differs from the TF 2.21
    this project runs in exactly the ways the tests below rely on."""
    assert image_tag(DEFAULT_SERVING_VERSION) == DEFAULT_SERVING_VERSION
    assert "2.20" in supported_versions()
    table = version_table("2.20")
    assert table["tensorflow"] == "2.20.0"
    assert table["graph_def_version"] < tf.version.GRAPH_DEF_VERSION
    assert op_def_registry.get("DecodeJxl") is not None  # TF 2.21 has it...
    assert "DecodeJxl" not in table["ops"]  # ...2.20 does not
    assert "Tshape" in {a.name for a in op_def_registry.get("TensorListGetItem").attr}
    assert "Tshape" not in table["ops"]["TensorListGetItem"]
    assert table["ops"]["MatMul"] == sorted(a.name for a in op_def_registry.get("MatMul").attr)


def test_reference_export_loads_on_every_known_version(tmp_path: Path) -> None:
    from exporter import ExportOptions, export_model
    from tests import models

    report = export_model(
        models.reference_model(), tmp_path, "reference", ExportOptions(parity_samples=1)
    )
    facts = savedmodel_facts(report.savedmodel_dir)
    for version in supported_versions():
        check_compatible(facts, version)


@pytest.mark.parametrize("version", ["2.20", "2.19.0"])
def test_op_unknown_to_the_version_is_refused_naming_it(tmp_path: Path, version: str) -> None:
    facts = savedmodel_facts(_write_savedmodel(tmp_path / "jxl", _jxl_graph))
    assert "DecodeJxl" in facts.ops
    with pytest.raises(ServingCompatError) as raised:
        check_compatible(facts, version)
    message = str(raised.value)
    assert "op DecodeJxl" in message and "Op type not registered 'DecodeJxl'" in message
    assert "\n" not in message


def test_attr_unknown_to_the_version_is_refused_naming_it(tmp_path: Path) -> None:
    facts = savedmodel_facts(_write_savedmodel(tmp_path / "tl", _tensor_list_int64_shape))
    with pytest.raises(ServingCompatError, match=r"op TensorListGetItem sets attr 'Tshape'"):
        check_compatible(facts, "2.20")


def test_graph_def_consumer_version_is_checked(tmp_path: Path) -> None:
    import dataclasses

    facts = savedmodel_facts(_write_savedmodel(tmp_path / "tl", _jxl_graph))
    newer = dataclasses.replace(facts, min_consumer=tf.version.GRAPH_DEF_VERSION, ops={})
    with pytest.raises(ServingCompatError, match="consumer version"):
        check_compatible(newer, "2.20")


class JxlPixels(keras.layers.Layer):
    """Adds the mean pixel of a JPEG XL image decoded from its input's bytes: a model whose
    serving graph holds DecodeJxl, an op TensorFlow 2.21 added."""

    def call(self, features: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_jxl(tf.io.serialize_tensor(features), channels=1)
        return features + tf.reduce_mean(tf.cast(image, features.dtype))


def test_export_refuses_and_publishes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    factory = tmp_path / "jxl_model.py"
    factory.write_text(
        "import keras\n"
        "from tests.test_serving_compat import JxlPixels\n"
        "def build():\n"
        "    features = keras.Input((10,), name='features')\n"
        "    return keras.Model(features, keras.layers.Dense(1)(JxlPixels()(features)))\n"
    )
    code = main(
        [
            "export",
            "--model",
            f"{factory}:build",
            "--name",
            "jxl",
            "--out",
            str(tmp_path / "out"),
            "--serving-version",
            "2.20",
        ]
    )
    err = capsys.readouterr().err.splitlines()
    assert code == 1
    (error,) = [line for line in err if line.startswith("error:")]
    assert "op DecodeJxl" in error and "TF Serving 2.20.0" in error
    assert not list((tmp_path / "out" / "tfserving" / "jxl").glob("[0-9]*"))
    assert not (tmp_path / "out" / "reports").exists()


def test_deploy_rechecks_against_its_serving_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An export checked for one version, deployed on an older one that lacks an op: deploy
    refuses (exit 1) before writing any manifest."""
    out = tmp_path / "out"
    _write_savedmodel(out / "tfserving" / "jxl" / "1", _jxl_graph)
    report = {"weights_bytes": 0, "artifacts": {"savedmodel_dir": str(out / "tfserving/jxl/1")}}
    (out / "reports" / "jxl").mkdir(parents=True)
    (out / "reports" / "jxl" / "1.json").write_text(json.dumps(report))
    code = main(["deploy", "--out", str(out), "--name", "jxl", "--serving-version", "2.20"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and "op DecodeJxl" in err
    assert not (out / "deploy").exists()
