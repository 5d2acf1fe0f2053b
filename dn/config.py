"""Where DeepNode keeps its files, read at call time so tests can point `DN_HOME` elsewhere.

$DN_HOME/                 (default ~/.deepnode)
    config.toml           optional: node = "http://127.0.0.1:8765"
    wallets/NAME.json     keystores, 0600 files in a 0700 folder
    nodes/NAME/           a node's key, genesis and chain store
    models/               content-addressed GGUF files
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from dn.errors import InputError

DEFAULT_PORT = 8765
DEFAULT_NODE_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
DEFAULT_NODE_NAME = "default"


def home(override: str | os.PathLike[str] | None = None) -> Path:
    if override:
        return Path(override).expanduser()
    env = os.environ.get("DN_HOME")
    return Path(env).expanduser() if env else Path.home() / ".deepnode"


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) with mode 0700 for the last part, and return it."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
    except OSError as exc:
        raise InputError(f"cannot create folder {path}: {exc.strerror or exc}") from None
    return path


def wallets_dir(base: Path | None = None) -> Path:
    return (base or home()) / "wallets"


def node_dir(name: str = DEFAULT_NODE_NAME, base: Path | None = None) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise InputError(f"invalid node name {name!r}")
    return (base or home()) / "nodes" / name


def load_config(base: Path | None = None) -> dict[str, Any]:
    path = (base or home()) / "config.toml"
    if not path.exists():
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path} is not valid TOML: {exc}") from None


def node_url(override: str | None = None, base: Path | None = None) -> str:
    """The node the CLI talks to: --node, then $DN_NODE, then config.toml, then the default."""
    url = override or os.environ.get("DN_NODE") or load_config(base).get("node")
    url = str(url or DEFAULT_NODE_URL)
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `path` whole or not at all: a temp file in the same folder, fsync, rename, fsync
    the folder. A crash leaves the old file or the new one, never half of either."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
