"""docker/: the Dockerfile lints clean, compose and the config examples parse with the real
parsers and point where the exporter writes, and the healthcheck command really probes REST."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tests.conftest import REPO_ROOT
from tests.docker_files import (
    DOCKER,
    batching_parameters_class,
    compose,
    dockerfile_instructions,
    health_commands,
)


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), "hadolint is a dev dependency: pip install '.[dev]'"
    result = subprocess.run(
        [hadolint, str(DOCKER / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_pins_the_official_image_and_bakes_the_models() -> None:
    lines = dockerfile_instructions()
    (base,) = [line for line in lines if line.startswith("FROM ")]
    assert re.fullmatch(r"FROM tensorflow/serving:2\.\d+\.\d+", base), base
    assert "COPY artifacts/tfserving/ /models/" in lines
    assert "ENV MODEL_NAME=${MODEL_NAME}" in lines
    assert any(line.startswith("ARG MODEL_NAME=") for line in lines)


def test_compose_uses_the_same_pinned_image() -> None:
    base = next(x for x in dockerfile_instructions() if x.startswith("FROM ")).split()[1]
    assert compose()["services"]["tfserving-volume"]["image"] == base


def test_compose_ports_env_and_build() -> None:
    services = compose()["services"]
    assert set(services) == {"tfserving", "tfserving-volume"}
    for service in services.values():
        assert service["ports"] == ["8500:8500", "8501:8501"]
        assert service["environment"]["MODEL_NAME"] == "${MODEL_NAME:-reference}"
        assert service["healthcheck"]["test"][0] == "CMD"
    build = services["tfserving"]["build"]
    assert (DOCKER / build["context"]).resolve() == REPO_ROOT
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    assert services["tfserving-volume"]["profiles"] == ["volume"]


def test_default_model_name_is_the_makefiles() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^NAME \?= reference$", makefile, re.M)
    assert re.search(r"^OUT \?= artifacts$", makefile, re.M)
    assert re.search(r"^ARG MODEL_NAME=reference$", (DOCKER / "Dockerfile").read_text(), re.M)


def test_volume_points_at_what_the_exporter_writes(tmp_path: Path) -> None:
    """Export a real model into <tmp>/artifacts and resolve the compose bind mount from a
    <tmp>/docker twin: /models/<MODEL_NAME>/<version>/saved_model.pb must exist there."""
    from exporter import export_model
    from tests import models

    volumes = compose()["services"]["tfserving-volume"]["volumes"]
    (models_mount,) = [v for v in volumes if v["target"] == "/models"]
    assert models_mount["type"] == "bind" and models_mount["read_only"] is True
    assert models_mount["source"] == "../artifacts/tfserving"
    assert (DOCKER / models_mount["source"]).resolve() == REPO_ROOT / "artifacts" / "tfserving"

    report = export_model(models.reference_model(), tmp_path / "artifacts", "reference")
    (tmp_path / "docker").mkdir()
    mounted = (tmp_path / "docker" / models_mount["source"]).resolve()
    version_dir = mounted / "reference" / "1"
    assert (version_dir / "saved_model.pb").is_file()
    assert Path(report.savedmodel_dir).resolve() == version_dir
    for config in ("models.config", "batching.config"):
        (mount,) = [v for v in volumes if v["target"] == f"/config/{config}"]
        assert (DOCKER / mount["source"]).resolve() == DOCKER / config


def test_dockerignore_sends_only_models_and_configs() -> None:
    lines = [
        line
        for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert {"!artifacts/tfserving/", "!docker/models.config", "!docker/batching.config"} <= set(
        lines
    )


def test_models_config_parses_as_model_server_config() -> None:
    config = text_format.Parse(
        (DOCKER / "models.config").read_text(), model_server_config_pb2.ModelServerConfig()
    )
    (entry,) = config.model_config_list.config
    assert entry.name == "reference"
    assert entry.base_path == "/models/reference"
    assert entry.model_platform == "tensorflow"
    assert entry.model_version_policy.latest.num_versions == 2


def test_batching_config_parses_as_batching_parameters() -> None:
    from serving.batching import parse_batching_parameters

    text = (DOCKER / "batching.config").read_text()
    params = text_format.Parse(text, batching_parameters_class()())
    assert params.DESCRIPTOR.full_name == "tensorflow.serving.BatchingParameters"
    assert params.max_batch_size.value == 64
    assert params.allowed_batch_sizes[-1] == params.max_batch_size.value
    assert list(params.allowed_batch_sizes) == sorted(params.allowed_batch_sizes)
    assert params.num_batch_threads.value > 0
    effective = parse_batching_parameters(text)  # the embedded server accepts it too
    assert (effective.max_batch_size, effective.allowed_batch_sizes) == (64, (8, 16, 32, 64))


@pytest.mark.parametrize("source", ["Dockerfile", "compose"])
def test_healthcheck_really_probes_the_rest_status(server: Any, source: str) -> None:
    """Run the exact probe (bash /dev/tcp, as the image has no curl) against the REST port."""
    if server.rest_target is None:
        pytest.skip("no REST target")
    bash = shutil.which("bash")
    assert bash is not None, "the probe is a bash script (/dev/tcp): bash is needed to run it"
    host, port = server.rest_target.rsplit(":", 1)
    script = health_commands()[source]
    assert "/dev/tcp/127.0.0.1/8501" in script
    script = script.replace("127.0.0.1/8501", f"{host}/{port}")

    def probe(model: str) -> int:
        return subprocess.run(
            [bash, "-c", script], env={"MODEL_NAME": model}, capture_output=True, timeout=30
        ).returncode

    assert probe("half_plus_two") == 0
    assert probe("no_such_model") != 0
