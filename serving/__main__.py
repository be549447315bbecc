"""`python -m serving [flags]`: the model server (tensorflow_model_server's flags)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence


def main(argv: Sequence[str]) -> int:
    """Parses server flags and serves until SIGTERM/SIGINT."""
    from serving.server import parse_args, serve

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return serve(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
