"""Which versions of a model exist and which should be served (TF Serving's
`FileSystemStoragePathSource` and its `ServableVersionPolicy`).

A base path's numeric children are its versions; the model's version policy (latest N, all, or
specific) picks the aspired ones. The manager (`serving.manager`) loads what this aspires.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping

from tensorflow_serving.config import model_server_config_pb2

ModelConfig = model_server_config_pb2.ModelConfig

# `absl::SimpleAtoi` on a directory name: optional sign and surrounding spaces, then digits.
_VERSION_NAME = re.compile(r"^\s*\+?(\d+)\s*$")
_INT64_MAX = 2**63 - 1

log = logging.getLogger(__name__)


def versions_on_disk(config: ModelConfig) -> dict[int, str]:
    """Numeric children of the base path (`1`, `00000123`); others (`v1`, `.tmp-3`) ignored."""
    try:
        names = sorted(os.listdir(config.base_path))
    except OSError as e:
        log.error(
            "FileSystemStoragePathSource encountered a filesystem access error: "
            "Could not find base path %s for servable %s with error %s",
            config.base_path,
            config.name,
            e.strerror,
        )
        return {}
    found: dict[int, str] = {}
    for name in names:
        match = _VERSION_NAME.match(name)
        if match is None or int(match.group(1)) > _INT64_MAX:
            continue
        version = int(match.group(1))
        if version in found:
            log.warning(
                "Duplicate version directories detected for %s version %d", config.name, version
            )
            continue
        found[version] = os.path.join(config.base_path, name)
    if not found:
        log.warning(
            "No versions of servable %s found under base path %s. Did you forget to name your leaf "
            "directory as a number (eg. '/1/')?",
            config.name,
            config.base_path,
        )
    return found


def aspired_versions(config: ModelConfig, on_disk: Mapping[int, str]) -> set[int]:
    """The version policy: latest N (default 1), all, or specific versions."""
    policy = config.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return set(on_disk)
    if kind == "specific":
        wanted = set(policy.specific.versions)
        if not wanted:
            log.warning("No specific versions requested for servable %s.", config.name)
        for v in sorted(wanted - set(on_disk)):
            log.warning(
                "Version %d of servable %s, which was requested to be served as a 'specific' "
                "version in the servable's version policy, was not found in the file system",
                v,
                config.name,
            )
        return wanted & set(on_disk)
    count = max(1, policy.latest.num_versions) if kind == "latest" else 1
    return set(sorted(on_disk, reverse=True)[:count])
