"""Bounds on what one request may make the server allocate, and the checks that enforce them.

TF Serving trusts its inputs more than an embedded Python server can: a JSON body, its gzip
inflation, the element count a TensorProto shape declares, and JSON nesting all turn into
memory and CPU before any model runs. (JSON nesting and numbers too big for a double are
refused by `json_document`, which parses as rapidjson does; a quoted request value is cut to
256 bytes there, TF Serving's own rule.) Each limit here answers with a short INVALID_ARGUMENT /
RESOURCE_EXHAUSTED-class error (REST 400/413) instead of a 500 or an OOM kill. The REST size
limit is an extension flag, `--rest_api_max_request_bytes`, defaulting to gRPC's 4 MB receive
default."""

from __future__ import annotations

import math

from serving.errors import invalid_argument

DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024  # gRPC's default max receive message length
# A typed TensorProto with fewer values than its shape declares is filled by repetition
# (Tensor::FromProto); past this many elements the fill is refused rather than allocated.
MAX_FILL_ELEMENTS = 1 << 22
INT64_MAX = 2**63 - 1
MAX_TENSOR_RANK = 64  # numpy's limit (TF's TensorShape allows 254)


def check_rank(rank: int) -> None:
    """An array nested deeper than a tensor may be ranked."""
    if rank > MAX_TENSOR_RANK:
        raise invalid_argument(
            f"Tensor of rank {rank} exceeds the maximum rank of {MAX_TENSOR_RANK}"
        )


def declared_elements(dims: tuple[int, ...]) -> int:
    """Elements a shape declares, as an exact integer (numpy's int64 product would wrap)."""
    return math.prod(dims)
