"""Shared fixtures: every test gets its own DN_HOME, so nothing touches a real ~/.deepnode."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def dn_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dnhome"
    monkeypatch.setenv("DN_HOME", str(home))
    monkeypatch.delenv("DN_PASSWORD", raising=False)
    monkeypatch.delenv("DN_NODE", raising=False)
    return home
