"""The tiny random checkpoint the fast bench tests run (written once per session)."""

from __future__ import annotations

import pytest
from tiny_model import write_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny_model"))
