"""The content-addressed model store in `$DN_HOME/models/`.

    models/<sha256>.gguf        the model file, named by the SHA-256 of its bytes (mode 0644)
    models/<sha256>.json        {"sha256", "size", "name", "source"}, written atomically
    models/<sha256>.gguf.part   the bytes of a resumable download in progress

A file becomes `<sha256>.gguf` only by a rename after its bytes were hashed, so a model in the
store always matches its name; a crash leaves at most a temp file or a `.part` behind. A model
counts as present (`has`) when its file and its sidecar both exist and agree on the size.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from dn.config import atomic_write
from dn.errors import InputError, ModelError

Progress = Callable[[int, int], None]  # update(done_bytes, total_bytes)

CHUNK = 1 << 20
SHA_RE = re.compile(r"[0-9a-f]{64}")
MIN_PREFIX = 4


def check_sha(sha: str) -> str:
    """`sha` if it is 64 lowercase hex digits (it becomes part of a path), else InputError."""
    if not isinstance(sha, str) or not SHA_RE.fullmatch(sha):
        raise InputError(f"{sha!r} is not a SHA-256 (64 lowercase hex digits)", reason="bad-sha")
    return sha


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
            done += len(block)
            if progress:
                progress(done, total)
    return digest.hexdigest()


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            yield block


class ModelStore:
    """GGUF files by SHA-256 under `root` (normally `$DN_HOME/models`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def default(cls, home: Path | None = None) -> ModelStore:
        """The store in `home` (default: `dn.config.home()`)."""
        from dn.config import home as dn_home

        return cls((home or dn_home()) / "models")

    def path(self, sha: str) -> Path:
        return self.root / f"{check_sha(sha)}.gguf"

    def sidecar_path(self, sha: str) -> Path:
        return self.root / f"{check_sha(sha)}.json"

    def partial_path(self, sha: str) -> Path:
        """Where a resumable download of `sha` keeps its bytes until `commit_partial`."""
        return self.root / f"{check_sha(sha)}.gguf.part"

    def info(self, sha: str) -> dict[str, Any] | None:
        """The sidecar of `sha` with its `path`, or None when the model is not (wholly) here."""
        try:
            meta = json.loads(self.sidecar_path(sha).read_text())
            size = self.path(sha).stat().st_size
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("sha256") != sha or meta.get("size") != size:
            return None
        return {**meta, "path": str(self.path(sha))}

    def has(self, sha: str) -> bool:
        return self.info(sha) is not None

    def ensure_root(self) -> Path:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create folder {self.root}: {exc.strerror or exc}") from None
        return self.root

    def add_file(
        self,
        src: Path,
        *,
        name: str,
        source: str,
        expected_sha: str | None = None,
        expected_size: int | None = None,
        progress: Progress | None = None,
    ) -> str:
        """Copy `src` into the store, hashing as it streams; returns its SHA-256. With
        `expected_sha` / `expected_size`, a mismatch is a ModelError (`bad-hash` / `bad-size`)
        and leaves nothing behind."""
        src = Path(src)
        try:
            size = src.stat().st_size
        except OSError as exc:
            raise ModelError(
                f"cannot read {src}: {exc.strerror or exc}", reason="unreadable"
            ) from None
        if expected_size is not None and size != expected_size:
            raise ModelError(
                f"{src.name} is {size:,} bytes, expected {expected_size:,}", reason="bad-size"
            )
        return self.add_stream(
            file_chunks(src),
            name=name,
            source=source,
            expected_sha=expected_sha,
            expected_size=expected_size,
            total=size,
            progress=progress,
        )

    def add_stream(
        self,
        chunks: Iterable[bytes],
        *,
        name: str,
        source: str,
        expected_sha: str | None = None,
        expected_size: int | None = None,
        total: int | None = None,
        progress: Progress | None = None,
    ) -> str:
        """Like `add_file`, from an iterable of byte blocks (a zip member, several chunks)."""
        if expected_sha is not None:
            check_sha(expected_sha)
        total = total if total is not None else expected_size or 0
        self.ensure_root()
        digest = hashlib.sha256()
        done = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=".add-", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                for block in chunks:
                    digest.update(block)
                    out.write(block)
                    done += len(block)
                    if expected_size is not None and done > expected_size:
                        raise ModelError(
                            f"{name} is more than the expected {expected_size:,} bytes",
                            reason="bad-size",
                        )
                    if progress:
                        progress(done, max(total, done))
                out.flush()
                os.fsync(out.fileno())
            if expected_size is not None and done != expected_size:
                raise ModelError(
                    f"{name} is {done:,} bytes, expected {expected_size:,}", reason="bad-size"
                )
            sha = digest.hexdigest()
            if expected_sha is not None and sha != expected_sha:
                raise ModelError(
                    f"{name} has SHA-256 {sha}, expected {expected_sha}", reason="bad-hash"
                )
            self._install(tmp, sha, done, name=name, source=source)
            return sha
        finally:
            tmp.unlink(missing_ok=True)

    def commit_partial(
        self, sha: str, name: str, source: str, progress: Progress | None = None
    ) -> str:
        """Hash the finished `.part` of `sha`: move it into place if it matches, else delete it
        and raise ModelError `bad-hash`. Returns the model's path."""
        part = self.partial_path(sha)
        if not part.exists():
            raise ModelError(f"no partial download of {sha} to commit", reason="missing")
        actual = sha256_file(part, progress)
        if actual != sha:
            part.unlink(missing_ok=True)
            raise ModelError(
                f"the download of {name} has SHA-256 {actual}, expected {sha}; it was deleted",
                reason="bad-hash",
            )
        self._install(part, sha, part.stat().st_size, name=name, source=source)
        return str(self.path(sha))

    def _install(self, tmp: Path, sha: str, size: int, *, name: str, source: str) -> None:
        """Rename a hashed file into place, then write its sidecar (so a sidecar never describes
        bytes that are not there)."""
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.path(sha))
        meta = {"sha256": sha, "size": size, "name": name, "source": source}
        atomic_write(self.sidecar_path(sha), (json.dumps(meta, sort_keys=True) + "\n").encode())

    def verify(self, sha: str, progress: Progress | None = None) -> bool:
        """Re-hash the stored file: True when it is present and its bytes match `sha`."""
        return self.has(sha) and sha256_file(self.path(sha), progress) == sha

    def remove(self, sha: str) -> None:
        for path in (self.sidecar_path(sha), self.path(sha)):
            path.unlink(missing_ok=True)

    def list(self) -> list[dict[str, Any]]:
        """Every model present, from the sidecars, sorted by name then hash."""
        if not self.root.is_dir():
            return []
        out = []
        for sidecar in self.root.glob("*.json"):
            if SHA_RE.fullmatch(sidecar.stem) and (meta := self.info(sidecar.stem)):
                out.append(meta)
        return sorted(out, key=lambda m: (str(m.get("name")), m["sha256"]))

    def find(self, name_or_sha_prefix: str) -> str | None:
        """The SHA-256 of the model with this name, full hash or unique hash prefix (at least
        4 hex digits); None when nothing matches. Ambiguous names or prefixes are an InputError."""
        query = name_or_sha_prefix.strip()
        if SHA_RE.fullmatch(query):
            return query if self.has(query) else None
        models = self.list()
        by_name = [m["sha256"] for m in models if m.get("name") == query]
        if len(by_name) == 1:
            return str(by_name[0])
        if len(by_name) > 1:
            raise InputError(
                f"{len(by_name)} models are named {query!r}; give a hash prefix instead",
                reason="ambiguous-model",
            )
        if len(query) < MIN_PREFIX or not re.fullmatch(r"[0-9a-f]+", query):
            return None
        by_prefix = [m["sha256"] for m in models if m["sha256"].startswith(query)]
        if len(by_prefix) > 1:
            raise InputError(
                f"hash prefix {query!r} matches {len(by_prefix)} models; give more digits",
                reason="ambiguous-model",
            )
        return str(by_prefix[0]) if by_prefix else None
