"""Fixtures shared by the export and backend tests: one small model, exported once
per session (an export takes tens of seconds on a 2-core machine). No test mutates
either; tests that need a different model build their own."""

from __future__ import annotations

from pathlib import Path

import pytest
from recstream.inference.export import export_onnx_files
from recstream.inference.model import SeqRecModel
from test_backends_support import K, small_model


@pytest.fixture(scope="session")
def model() -> SeqRecModel:
    return small_model()


@pytest.fixture(scope="session")
def exported(model: SeqRecModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export")
    export_onnx_files(model, out, "test-v1", k=K, fp16=True)
    return out
