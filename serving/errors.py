"""Typed errors of the serving stack: a gRPC status code plus TF Serving's exact message text."""

from __future__ import annotations

import grpc

# The real server cuts long gRPC messages (model_servers/grpc_status_util.cc); REST never does.
GRPC_MESSAGE_LIMIT = 1024
TRUNCATION_SUFFIX = "...TRUNCATED"

# absl / TF error codes are the gRPC codes, 1:1 (tf.errors.OpError.error_code uses the same
# numbers).
_CODE_BY_NUMBER: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}


class ServingError(Exception):
    """A request or load failed the way TF Serving would fail it: same code, same message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class UsageError(Exception):
    """Bad command-line usage or an unreadable config: the process exits with code 2."""


def code_from_number(number: int) -> grpc.StatusCode:
    """Maps an absl/TF numeric error code to the gRPC status code (UNKNOWN if out of range)."""
    return _CODE_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def grpc_message(message: str) -> str:
    """Applies the real server's 1024-character cut to a gRPC status message."""
    if len(message) > GRPC_MESSAGE_LIMIT:
        return message[:GRPC_MESSAGE_LIMIT] + TRUNCATION_SUFFIX
    return message


def invalid_argument(message: str) -> ServingError:
    """Shorthand for the most common request error."""
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def deadline_exceeded() -> ServingError:
    """A request whose deadline passed before it could run (TF's own RunOptions timeout text)."""
    return ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline exceeded")


def check_deadline(timeout_s: float | None) -> None:
    """Refuses to start work for a caller whose deadline has already passed."""
    if timeout_s is not None and timeout_s <= 0:
        raise deadline_exceeded()
