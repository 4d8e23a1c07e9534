"""What CI installs must be there. Outside CI a test whose optional dependency is missing (the ONNX
backend, gradio_client, Debian's chromium) is skipped with the reason; in CI (the environment
variable CI set, as `.ci/run` does) it fails instead, so that nothing is skipped silently there."""
from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

IN_CI = bool(os.environ.get("CI"))


def required_import(name: str, reason: str | None = None) -> ModuleType:
    """`pytest.importorskip(name)`, except in CI, where a missing module is an error."""
    if IN_CI:
        return importlib.import_module(name)
    return pytest.importorskip(name, reason=reason)


def skip_unless(condition: bool, reason: str) -> pytest.MarkDecorator:
    """`pytest.mark.skipif(not condition)`, except in CI, where the test runs (and fails on what is missing)."""
    return pytest.mark.skipif(not condition and not IN_CI, reason=reason)
