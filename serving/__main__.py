"""`python -m serving [flags]`, or the `frozen-scalars-model-server` console script: the model
server with tensorflow_model_server's flags. `--help` and `--version` answer without importing
TensorFlow."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

PROGRAM = "frozen-scalars-model-server"


def main(argv: Sequence[str]) -> int:
    """Parses server flags (tensorflow::Flags rules) and serves until SIGTERM/SIGINT.

    Exit codes: 0 (stopped by SIGTERM/SIGINT, --help, --version), 2 (a flag value or config
    the server cannot use), 1 (the server could not start: models, ports, credentials)."""
    from serving import flags

    try:
        parsed = flags.parse(argv)
        flags.check_values(parsed.values)
    except flags.FlagParseError as e:
        print(f"error: {e} (see --help)", file=sys.stderr, flush=True)
        return 2
    if parsed.help:
        print(flags.usage(PROGRAM), end="", flush=True)
        return 0
    if parsed.values.version:
        print(flags.version_text(), end="", flush=True)
        return 0
    if parsed.unknown:
        # tensorflow_model_server reports the first unmatched argument and starts anyway.
        print(f"unknown argument: {parsed.unknown[0]}", file=sys.stderr, flush=True)

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from serving.server import parse_args, serve

    return serve(parse_args(argv))


def console() -> int:
    """The `frozen-scalars-model-server` console script."""
    return main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
