"""`python -m serving [flags]` runs the server; `python -m serving parity ...` runs the parity
check (owned by serving.parity)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence


def main(argv: Sequence[str]) -> int:
    """Dispatches the `parity` subcommand, else parses server flags and serves."""
    if argv and argv[0] == "parity":
        from serving import parity

        return parity.main(list(argv[1:]))
    from serving.server import parse_args, serve

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return serve(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
