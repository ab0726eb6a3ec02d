"""Fixtures of the module unit tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def fake_bin(tmp_path) -> str:
    """An executable the modules accept as ``binary`` (run_command is faked, it never runs)."""
    path = tmp_path / "conntrack"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)
