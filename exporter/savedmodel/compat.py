"""Can a given TF Serving version load this SavedModel? Ops, op attrs and GraphDef versions.

TF Serving X.Y runs TensorFlow X.Y. Loading a graph there fails when (TensorFlow's own
checks, `core/framework/versions.cc` and `node_def_util.cc`):
- the GraphDef's `min_consumer` is above that TensorFlow's GraphDef version, or its
  `producer` is below the minimum producer that version still reads;
- a node uses an op that version does not register (`Op type not registered 'X'`);
- a node carries an attr the op's definition in that version lacks (`NodeDef mentions attr
  'A' not in Op<...>`). Attrs whose value is the op's default are stripped when the
  SavedModel is written, which is what lets a newer exporter's graph load on an older server.

What each version knows comes from `data/serving_ops.json` (beside this module), generated
from the real `tensorflow` wheel of each version by `tools/serving_ops_table.py`.

DEFAULT_SERVING_VERSION is the `tensorflow/serving` image tag used by docker/Dockerfile,
docker/docker-compose.yml and the generated manifests; tests/test_deploy.py fails when they
disagree. To move them: run `python tools/serving_ops_table.py X.Y.Z`, then change this
constant, the Dockerfile's FROM and compose's image together.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from exporter.errors import ServingCompatError, ServingVersionError

SERVING_IMAGE = "tensorflow/serving"
DEFAULT_SERVING_VERSION = "2.20.0"
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class GraphFacts:
    """What a SavedModel's serving graph asks of the runtime that loads it."""

    producer: int
    min_consumer: int
    bad_consumers: tuple[int, ...]
    ops: dict[str, tuple[str, ...]]  # op -> attrs set on any of its nodes (sorted)

    def to_dict(self) -> dict[str, Any]:
        """The report's view: GraphDef versions and the sorted op set."""
        return {
            "graph_def_versions": {
                "producer": self.producer,
                "min_consumer": self.min_consumer,
                "bad_consumers": list(self.bad_consumers),
            },
            "ops": sorted(self.ops),
        }


@functools.cache
def _tables() -> dict[str, Any]:
    text = resources.files("exporter.savedmodel").joinpath("data/serving_ops.json").read_text()
    return json.loads(text)["versions"]


def supported_versions() -> list[str]:
    """The X.Y versions the op table covers, oldest first."""
    return sorted(_tables(), key=lambda v: tuple(int(p) for p in v.split(".")))


def image_tag(serving_version: str) -> str:
    """The `tensorflow/serving` tag for `X.Y` (-> X.Y.0) or `X.Y.Z` (as given)."""
    match = _VERSION.fullmatch(serving_version)
    if match is None:
        raise ServingVersionError(
            f"--serving-version={serving_version!r} is not a version: use X.Y or X.Y.Z, "
            f"e.g. {DEFAULT_SERVING_VERSION}."
        )
    major, minor, patch = match.groups()
    return f"{major}.{minor}.{patch or 0}"


def version_table(serving_version: str) -> dict[str, Any]:
    """The op table of the TensorFlow that TF Serving `serving_version` runs."""
    minor = ".".join(image_tag(serving_version).split(".")[:2])
    table = _tables().get(minor)
    if table is None:
        raise ServingVersionError(
            f"--serving-version={serving_version}: no op table for TF Serving {minor} (known: "
            f"{', '.join(supported_versions())}). Pick a known version, or add it with "
            f"`python tools/serving_ops_table.py {minor}.0`."
        )
    return table


def graph_facts(graph_def: Any) -> GraphFacts:
    """Ops (with the attrs their nodes set) of a GraphDef and of its function library.

    A node whose op names a library function is a call, not an op: its body's nodes count.
    Attrs starting with `_` are internal (TensorFlow's NodeDef validation skips them).
    """
    functions = {f.signature.name for f in graph_def.library.function}
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes.extend(function.node_def)
    ops: dict[str, set[str]] = {}
    for node in nodes:
        if node.op in functions:
            continue
        ops.setdefault(node.op, set()).update(a for a in node.attr if not a.startswith("_"))
    versions = graph_def.versions
    return GraphFacts(
        producer=versions.producer,
        min_consumer=versions.min_consumer,
        bad_consumers=tuple(versions.bad_consumers),
        ops={op: tuple(sorted(attrs)) for op, attrs in sorted(ops.items())},
    )


def savedmodel_facts(export_dir: str | Path) -> GraphFacts:
    """GraphFacts of the `serve` MetaGraphDef in `export_dir/saved_model.pb`, read as a proto."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = Path(export_dir) / "saved_model.pb"
    try:
        saved_model = saved_model_pb2.SavedModel.FromString(path.read_bytes())
    except OSError as exc:
        raise ServingVersionError(
            f"Cannot read {path}: {exc.strerror}. Point at an exported version directory."
        ) from exc
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return graph_facts(meta_graph.graph_def)
    raise ServingCompatError(
        f"{path} has no MetaGraphDef tagged 'serve', which TF Serving loads: re-export it."
    )


def check_compatible(facts: GraphFacts, serving_version: str) -> None:
    """Raise ServingCompatError (one line, naming the op or version) unless it would load."""
    table = version_table(serving_version)
    tf_version = table["tensorflow"]
    where = f"TF Serving {image_tag(serving_version)} (TensorFlow {tf_version})"
    fix = "pass a newer --serving-version, or change the model to avoid it"
    if facts.min_consumer > table["graph_def_version"]:
        raise ServingCompatError(
            f"The SavedModel's GraphDef needs consumer version >= {facts.min_consumer}, "
            f"but {where} reads up to {table['graph_def_version']}: {fix}."
        )
    if facts.producer < table["graph_def_min_producer"] or (
        table["graph_def_version"] in facts.bad_consumers
    ):
        raise ServingCompatError(
            f"The SavedModel's GraphDef (producer {facts.producer}) is refused by {where}: "
            "re-export it with a TensorFlow that version supports."
        )
    known = table["ops"]
    unknown = [op for op in facts.ops if op not in known]
    if unknown:
        more = f" (and {len(unknown) - 1} more: {', '.join(unknown[1:])})" if unknown[1:] else ""
        raise ServingCompatError(
            f"The SavedModel uses op {unknown[0]}{more}, which {where} does not register: "
            f"loading it would fail with \"Op type not registered '{unknown[0]}'\"; {fix}."
        )
    for op, attrs in facts.ops.items():
        extra = [attr for attr in attrs if attr not in known[op]]
        if extra:
            raise ServingCompatError(
                f"The SavedModel's op {op} sets attr {extra[0]!r}, which {op} does not have "
                f'in {where}: loading it would fail with "NodeDef mentions attr '
                f"'{extra[0]}' not in Op\"; {fix}."
            )
