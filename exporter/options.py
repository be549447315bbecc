"""What an export or a parity check may be asked to do: `ExportOptions`, `ParityOptions`.

Each is a frozen dataclass validated once, in `__post_init__`, so a bad value is refused
with one fix-it line (`UsageError`, exit 2) before a model is traced or a file written, from
Python and from the CLI alike. The CLI's flags are generated from the fields (`add_flags`):
a field with `cli(...)` metadata is a flag `--field-name` (the `--field_name` spelling is
accepted too); the others (callbacks, arrays, signatures) exist only in the Python API.
Imports nothing heavy: the CLI builds its parser from here without TensorFlow.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from exporter.errors import UsageError
from exporter.freeze.lift import DEFAULT_MAX_FROZEN_BYTES, parse_bytes
from exporter.savedmodel.compat import DEFAULT_SERVING_VERSION, version_table
from exporter.verify.runtimes import DEFAULT_RUNTIMES, RUNTIMES, check_runtimes
from serving.constants import MAX_WARMUP_RECORDS

FORMATS = ("savedmodel", "onnx")
# Written by default: TF Serving replays them before a version becomes AVAILABLE, so the first
# run (graph optimisation; tens of seconds for a 50M-parameter graph with every weight inlined,
# well under a second once --max-frozen-bytes keeps them variables) happens at load, while the
# previous version still serves, not on a client's request.
DEFAULT_WARMUP_REQUESTS = 1
MIN_OPSET = 7
DEFAULT_PARITY_SAMPLES = 4
DEFAULT_BATCH_SIZES = (1, 4)
DEFAULT_PARITY_WAIT_S = 10.0  # a live --target answers GetModelStatus at once

Progress = Callable[[str], None]
WeightsProgress = Callable[[str, int, int], None]
_Options = TypeVar("_Options")


def cli(help: str, *, type: Callable[[str], Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Field metadata making the field a CLI flag; `kwargs` go to `add_argument`."""
    return {"cli": {"help": help, **({"type": type} if type else {}), **kwargs}}


def _size(text: str) -> int:
    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _list(text: str) -> tuple[str, ...]:
    return tuple(text.split(","))


def check_formats(formats: str | Iterable[str]) -> tuple[str, ...]:
    """The requested formats in canonical order, or a UsageError naming the valid ones."""
    parts = formats.split(",") if isinstance(formats, str) else list(formats)
    wanted = tuple(dict.fromkeys(f.strip().lower() for f in parts if f.strip()))
    unknown = [f for f in wanted if f not in FORMATS]
    if not wanted:
        raise UsageError(
            f"--formats is empty: name at least one of {','.join(FORMATS)} "
            f"(default: both), e.g. --formats {FORMATS[0]}."
        )
    if unknown:
        raise UsageError(
            f"--formats {','.join(wanted)}: unknown format {','.join(unknown)}. "
            f"Use a comma-separated subset of {','.join(FORMATS)} (default: both)."
        )
    return tuple(f for f in FORMATS if f in wanted)


# TF Serving takes the name as a directory under its base path and a URL path segment;
# `deploy` names the Kubernetes objects and KServe InferenceServices after it (lowercased,
# '_' and '.' as '-'), which must then be a DNS-1035 label: a letter first, a letter or digit
# last, at most 63 characters with the Triton service's "-onnx" suffix.
_MODEL_NAME = re.compile(r"[A-Za-z]([A-Za-z0-9_.-]*[A-Za-z0-9])?")
MAX_MODEL_NAME = 63 - len("-onnx")


def check_model_name(name: str) -> None:
    """A name TF Serving, Kubernetes and KServe all accept (see _MODEL_NAME), else UsageError."""
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name) or len(name) > MAX_MODEL_NAME:
        raise UsageError(
            f"--name {name!r} is not a model name TF Serving, Kubernetes and KServe all accept: "
            f"use letters, digits, '_', '-' and '.', starting with a letter and ending with a "
            f"letter or digit, at most {MAX_MODEL_NAME} characters, e.g. 'my_model'."
        )


def _check_int(flag: str, value: Any, low: int, high: float = math.inf, *, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        bound = f"{low}..{high}" if high != math.inf else f">= {low}"
        raise UsageError(f"{flag}={value!r}: must be an integer {bound}.{hint}")


def _check_tolerance(flag: str, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{flag}={value!r}: must be a number >= 0.")
    if not math.isfinite(value) or value < 0:
        raise UsageError(
            f"{flag}={value}: a tolerance must be a finite number >= 0 "
            "(omit it for the per-dtype default)."
        )


_RUNTIMES_FLAG = cli(
    "parity runtimes, comma-separated: "
    + ", ".join(f"{r.name} ({r.description})" for r in RUNTIMES.values())
    + f". Default: {','.join(DEFAULT_RUNTIMES)}",
    type=_list,
    metavar="LIST",
)


@dataclass(frozen=True, eq=False)
class ExportOptions:
    """Everything `export_model` may be told besides the model, the output root and the name."""

    version: int | None = field(
        default=None, metadata=cli("version number (default: next free)", type=int)
    )
    formats: tuple[str, ...] = field(
        default=FORMATS,
        metadata=cli(
            "artifacts to produce: savedmodel, onnx or both (default savedmodel,onnx)",
            type=_list,
            metavar="LIST",
        ),
    )
    onnx_only: bool = field(
        default=False,
        metadata=cli("skip the SavedModel (no longer needed for size: see --max-frozen-bytes)"),
    )
    opset: int | None = field(default=None, metadata=cli("ONNX opset (default 17)", type=int))
    warmup_requests: int = field(
        default=DEFAULT_WARMUP_REQUESTS,
        metadata=cli(
            "write N TF Serving warmup records (default 1; 0 writes none), replayed at load "
            "so a new version is warm before it serves",
            type=int,
            metavar="N",
        ),
    )
    atol: float | None = field(
        default=None,
        metadata=cli("parity atol for every output (default: per output dtype)", type=float),
    )
    rtol: float | None = field(
        default=None,
        metadata=cli("parity rtol for every output (default: per output dtype)", type=float),
    )
    allow_untracked: bool = field(
        default=False,
        metadata=cli("export even if an untracked variable is captured (it never trained)"),
    )
    max_frozen_bytes: int = field(
        default=DEFAULT_MAX_FROZEN_BYTES,
        metadata=cli(
            "weights frozen into the graph at most (default 64MiB); past it the largest "
            "tensors stay read-only variables (SavedModel variables/, model.onnx.data), "
            "scalars and small tensors are always Consts. Bytes or 512MiB / 1GiB",
            type=_size,
            metavar="SIZE",
        ),
    )
    serving_version: str = field(
        default=DEFAULT_SERVING_VERSION,
        metadata=cli(
            "refuse a SavedModel this TF Serving version cannot load (default: "
            f"{DEFAULT_SERVING_VERSION}, the image docker/ and the manifests use)"
        ),
    )
    runtimes: tuple[str, ...] = field(default=DEFAULT_RUNTIMES, metadata=_RUNTIMES_FLAG)
    parity_samples: int = DEFAULT_PARITY_SAMPLES
    parity_inputs: Sequence[Mapping[str, Any]] = ()
    input_signature: Mapping[str, Any] | None = None
    initial_values: Mapping[str, float] | None = None
    progress: Progress | None = None
    weights_progress: WeightsProgress | None = None

    def __post_init__(self) -> None:
        formats = ("onnx",) if self.onnx_only else self.formats
        object.__setattr__(self, "formats", check_formats(formats))
        object.__setattr__(self, "runtimes", check_runtimes(self.runtimes, self.formats))
        object.__setattr__(self, "parity_inputs", tuple(self.parity_inputs))
        if self.version is not None:
            _check_int("--version", self.version, 1, hint=" TF Serving versions start at 1.")
        if self.opset is not None:
            _check_int("--opset", self.opset, MIN_OPSET)
            from exporter.onnx_format.convert import check_opset  # the upper bound is tf2onnx's

            check_opset(self.opset)
        _check_int(
            "--warmup-requests",
            self.warmup_requests,
            0,
            MAX_WARMUP_RECORDS,
            hint=f" TF Serving reads at most {MAX_WARMUP_RECORDS} warmup records and fails "
            "the load past that.",
        )
        _check_tolerance("--atol", self.atol)
        _check_tolerance("--rtol", self.rtol)
        _check_int("--max-frozen-bytes", self.max_frozen_bytes, 0)
        _check_int("parity_samples", self.parity_samples, 0)
        version_table(self.serving_version)


@dataclass(frozen=True)
class ParityOptions:
    """How `run_parity` checks a published export: which servers, reference, inputs, bounds."""

    target: str | None = field(
        default=None, metadata=cli("gRPC HOST:PORT of a running server (default: embedded)")
    )
    rest_target: str | None = field(default=None, metadata=cli("REST HOST:PORT of that server"))
    v2_target: str | None = field(
        default=None,
        metadata=cli("gRPC HOST:PORT of a Triton / KServe v2 server for the v2 rows"),
    )
    v2_rest_target: str | None = field(
        default=None, metadata=cli("HTTP HOST:PORT of that Triton / KServe v2 server")
    )
    model: str | None = field(
        default=None, metadata=cli("Keras reference: a .keras path or module:factory")
    )
    custom_objects: tuple[str, ...] = field(
        default=(),
        metadata=cli(
            "module or .py file with custom Keras objects for --model (repeatable)",
            action="append",
            metavar="PY_OR_MODULE",
        ),
    )
    allow_unsafe_deserialization: bool = field(
        default=False,
        metadata=cli("load a --model .keras file holding Lambda bytecode (trusted files only)"),
    )
    wait: float = field(
        default=DEFAULT_PARITY_WAIT_S,
        metadata=cli(
            "seconds --target may take to answer and serve the model, checked before any "
            f"runtime loads (default {DEFAULT_PARITY_WAIT_S:g})",
            type=float,
            metavar="SECONDS",
        ),
    )
    version: int | None = field(
        default=None, metadata=cli("version to check (default: the latest on disk)", type=int)
    )
    samples: int = field(
        default=DEFAULT_PARITY_SAMPLES, metadata=cli("random batches per batch size", type=int)
    )
    batch_sizes: tuple[int, ...] | str = field(
        default=DEFAULT_BATCH_SIZES,
        metadata=cli("batch sizes, comma-separated (default 1,4)", metavar="LIST"),
    )
    inputs: tuple[Path, ...] = field(
        default=(),
        metadata=cli(
            ".npz with one array per input name (repeatable)",
            type=Path,
            action="append",
            metavar="NPZ",
        ),
    )
    atol: float | None = field(
        default=None, metadata=cli("default: per output dtype and dtype policy", type=float)
    )
    rtol: float | None = field(
        default=None, metadata=cli("default: per output dtype and dtype policy", type=float)
    )
    runtimes: tuple[str, ...] = field(default=DEFAULT_RUNTIMES, metadata=_RUNTIMES_FLAG)

    def __post_init__(self) -> None:
        object.__setattr__(self, "runtimes", check_runtimes(self.runtimes))
        object.__setattr__(self, "custom_objects", tuple(self.custom_objects))
        object.__setattr__(self, "inputs", tuple(Path(p) for p in self.inputs))
        sizes = self.batch_sizes
        if isinstance(sizes, str):
            try:
                sizes = [int(part) for part in sizes.split(",") if part.strip()]
            except ValueError as err:
                raise UsageError(f"--batch-sizes {self.batch_sizes!r}: {err}") from None
        object.__setattr__(self, "batch_sizes", tuple(sizes))
        if self.version is not None:
            _check_int("--version", self.version, 1)
        _check_int("--samples", self.samples, 0)
        if not self.batch_sizes:
            raise UsageError("--batch-sizes is empty: name at least one, e.g. --batch-sizes 1,4.")
        for size in self.batch_sizes:
            _check_int("--batch-sizes", size, 1)
        _check_tolerance("--atol", self.atol)
        _check_tolerance("--rtol", self.rtol)
        if self.target is None and self.rest_target is not None:
            raise UsageError("--rest-target needs --target (the embedded server has both)")
        if self.v2_target is None and self.v2_rest_target is not None:
            raise UsageError("--v2-rest-target needs --v2-target (the embedded server has both)")
        if (
            isinstance(self.wait, bool)
            or not isinstance(self.wait, int | float)
            or not (0 < self.wait < math.inf)
        ):
            raise UsageError(f"--wait={self.wait!r}: give a number of seconds above 0, e.g. 30.")


def add_flags(parser: argparse.ArgumentParser, options: type) -> None:
    """One flag per field of `options` that carries `cli(...)` metadata."""
    for f in dataclasses.fields(options):
        spec = f.metadata.get("cli")
        if spec is None:
            continue
        kwargs = dict(spec)
        if f.type in ("bool", bool):
            kwargs["action"] = "store_true"
        elif kwargs.get("action") == "append":
            kwargs["default"] = []
        else:
            kwargs["default"] = f.default
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, **kwargs)


def from_args(options: type[_Options], args: argparse.Namespace, **extra: Any) -> _Options:
    """The `options` the parsed flags name (plus `extra` API-only fields)."""
    flags = {f.name for f in dataclasses.fields(options) if "cli" in f.metadata}
    return options(**{name: getattr(args, name) for name in flags}, **extra)
