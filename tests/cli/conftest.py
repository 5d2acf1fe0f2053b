"""Fixtures for the CLI tests: real node processes (from the functional harness) and passwords."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.functional.conftest import node_factory  # noqa: F401

PASSWORD = "correct horse battery staple"


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    """A file holding PASSWORD (with a trailing newline, as an editor would leave it)."""
    path = tmp_path / "password.txt"
    path.write_text(PASSWORD + "\n")
    return path
