"""The docker/ files as the tests read them: the Dockerfile's instructions, compose, and the
protos their configs parse as. Shared by tests/test_docker.py and tests/test_deploy.py."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from tests.conftest import REPO_ROOT

DOCKER = REPO_ROOT / "docker"


def dockerfile_instructions() -> list[str]:
    """Instructions with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (DOCKER / "Dockerfile").read_text())
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


def batching_parameters_class() -> type:
    """The generated `tensorflow.serving.BatchingParameters`; the tensorflow-serving-api wheel
    does not ship servables/, so fall back to the embedded server's descriptor twin of it."""
    try:
        from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2
    except ImportError:
        from serving.batching import BatchingParametersProto

        return BatchingParametersProto
    return session_bundle_config_pb2.BatchingParameters


def health_commands() -> dict[str, str]:
    """The bash script of the Dockerfile's HEALTHCHECK and of compose (with `$$` unescaped)."""
    line = next(x for x in dockerfile_instructions() if x.startswith("HEALTHCHECK "))
    dockerfile_cmd = json.loads(line.split(" CMD ", 1)[1])
    compose_cmd = compose()["services"]["tfserving"]["healthcheck"]["test"]
    assert dockerfile_cmd[:2] == compose_cmd[1:3] == ["/bin/bash", "-c"]
    return {"Dockerfile": dockerfile_cmd[2], "compose": compose_cmd[3].replace("$$", "$")}
