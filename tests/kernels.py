"""The compiled kernels in tests: skip where numba is missing, and run code with them on or off."""

import importlib.util
from unittest import mock

import pytest

from entropy_prune import _compiled

needs_numba = pytest.mark.skipif(importlib.util.find_spec("numba") is None,
                                 reason="numba is not installed (qwen, vllm, fast extras)")


def kernels(on: bool):
    """Context: the compiled kernels on (they must load) or off (the numpy, torch and Python code)."""
    if on:
        pytest.importorskip("numba")
        assert _compiled._kernels() is not None
        return mock.patch.object(_compiled, "_kernels", _compiled._kernels)
    return mock.patch.object(_compiled, "_kernels", lambda: None)
