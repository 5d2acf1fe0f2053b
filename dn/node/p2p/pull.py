"""Pulling a model's GGUF file from peers by its SHA-256: resumable and hash-checked.

    pull_model(sha, ["http://10.0.0.7:8765", "http://10.0.0.9:8765"], store, size=98_362_432)

Each source is asked for `GET {url}/dn/v1/models/{sha}/blob`. The bytes go into the store's
`<sha>.gguf.part`; a pull that finds a `.part` already there asks for the rest only
(`Range: bytes=N-`, answered with 206). A server that ignores the range and answers 200 is read
from the start, overwriting the `.part`. When a source has sent everything, the whole file is
hashed (`ModelStore.commit_partial`): a match moves it into place; a mismatch deletes it and the
next source is tried. A source that cannot be reached, has no copy, or stops mid-way is skipped
too, and keeps what it delivered for the next source to continue. Ctrl-C (KeyboardInterrupt)
leaves the `.part` where it is, so the next pull resumes.

A node with a network key serves its files only to members: pull from one with
`transport=MemberTransport(member)` (dn.node.p2p.session), which handshakes and signs.

Errors: ModelError `bad-hash` when every source sent the wrong bytes, `pull-failed` when no
source delivered the file for any other reason (the message lists each source and why),
`unwritable` when the store cannot be written (no point trying other sources then); InputError
`bad-sha` for a malformed hash.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from dn.errors import ModelError
from dn.runner.modelstore import ModelStore, Progress, check_sha

CHUNK = 1 << 20
TIMEOUT = 30.0
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class SourceFailed(Exception):
    """One source could not deliver the model; the pull goes on with the next one."""

    def __init__(self, message: str, reason: str = "pull-failed") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


def blob_url(source: str, sha: str) -> str:
    return f"{source.rstrip('/')}/dn/v1/models/{check_sha(sha)}/blob"


def unique_sources(sources: Iterable[str | None]) -> list[str]:
    """The sources in order, without blanks and repeats (`http://a/` and `http://a` are one)."""
    seen: list[str] = []
    for source in sources:
        url = (source or "").strip().rstrip("/")
        if url and url not in seen:
            seen.append(url)
    return seen


def pull_model(
    sha: str,
    sources: Iterable[str | None],
    store: ModelStore,
    *,
    size: int | None = None,
    name: str | None = None,
    progress: Progress | None = None,
    chunk: int = CHUNK,
    timeout: float = TIMEOUT,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """Fetch model `sha` into `store` from the first of `sources` (node base URLs) that serves
    the right bytes. `size` (from the chain) bounds what a source may send; `progress(done,
    total)` sees the bytes in the `.part`, counting those a previous pull left there.

    Returns `{"sha256", "path", "size", "pulled", "source", "resumed_from", "downloaded",
    "failures"}`: `pulled` is False (and nothing is fetched) when the store holds it already;
    `resumed_from` is the byte where the successful download started, `downloaded` how many
    bytes this call fetched, `failures` `[{"source", "reason", "message"}]` for the sources
    skipped on the way (reason `bad-hash`, `bad-size`, `no-blob`, `http`, or `pull-failed` for
    one that could not be reached or stopped mid-way)."""
    check_sha(sha)
    label = name or f"{sha[:12]}…"
    if store.has(sha):
        return _result(store, sha, pulled=False, source=None, start=0, downloaded=0, failures=[])
    urls = unique_sources(sources)
    if not urls:
        raise ModelError(f"no source to pull {label} from", reason="pull-failed")
    store.ensure_root()
    part = store.partial_path(sha)
    if size is not None and _size_of(part) > size:
        part.unlink(missing_ok=True)  # more bytes than the model has: none of them can be trusted

    failures: list[dict[str, str]] = []
    downloaded = 0
    with httpx.Client(timeout=timeout, transport=transport, follow_redirects=False) as http:
        for url in urls:
            # A source that finished a .part it did not start may fail the hash through no
            # fault of its own: it gets one more go from byte 0.
            for attempt in range(2):
                transfer = _Transfer()
                try:
                    _download(http, url, sha, part, size, progress, chunk, transfer)
                    path = store.commit_partial(sha, name or sha[:12], source=url)
                except SourceFailed as exc:
                    failures.append({"source": url, "reason": exc.reason, "message": exc.message})
                    break
                except ModelError as exc:
                    if exc.reason != "bad-hash":
                        raise
                    if attempt == 0 and transfer.start > 0:
                        continue  # commit_partial deleted the .part; fetch it all from this source
                    failures.append({"source": url, "reason": exc.reason, "message": exc.message})
                    break
                finally:
                    downloaded += transfer.fetched
                return _result(
                    store,
                    sha,
                    pulled=True,
                    source=url,
                    start=transfer.start,
                    downloaded=downloaded,
                    failures=failures,
                    path=path,
                )
    reason = "bad-hash" if all(f["reason"] == "bad-hash" for f in failures) else "pull-failed"
    tried = "; ".join(f"{f['source']}: {f['message']}" for f in failures)
    raise ModelError(f"could not pull {label} from any source ({tried})", reason=reason)


def _result(
    store: ModelStore,
    sha: str,
    *,
    pulled: bool,
    source: str | None,
    start: int,
    downloaded: int,
    failures: list[dict[str, str]],
    path: str | None = None,
) -> dict[str, Any]:
    where = Path(path) if path else store.path(sha)
    return {
        "sha256": sha,
        "path": str(where),
        "size": where.stat().st_size,
        "pulled": pulled,
        "source": source,
        "resumed_from": start,
        "downloaded": downloaded,
        "failures": failures,
    }


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@dataclass
class _Transfer:
    """What one download from one source did: the byte it started at, the bytes it fetched."""

    start: int = 0
    fetched: int = 0


def _download(
    http: httpx.Client,
    url: str,
    sha: str,
    part: Path,
    size: int | None,
    progress: Progress | None,
    chunk: int,
    transfer: _Transfer,
) -> None:
    """Bring `part` up to the whole file from one source, counting in `transfer`. Raises
    SourceFailed for anything that is the source's fault (the `.part` keeps what arrived)."""
    offset = transfer.start = _size_of(part)
    if size is not None and offset == size:
        return  # complete already: only the hash check is left
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with http.stream("GET", blob_url(url, sha), headers=headers) as response:
            total = _expected_total(response, offset, size)
            if response.status_code == 416 and offset:
                return  # the .part already holds all there is; the hash check decides
            if response.status_code == 200:
                offset = transfer.start = 0  # the server sends the whole file: start over
            done = offset
            try:
                with part.open("r+b" if offset else "wb") as out:
                    out.seek(offset)
                    out.truncate()
                    for block in response.iter_bytes(chunk):
                        if total is not None and done + len(block) > total:
                            raise SourceFailed(f"sent more than the {total:,} bytes it announced")
                        out.write(block)
                        done += len(block)
                        transfer.fetched += len(block)
                        if progress:
                            progress(done, total if total is not None else done)
            except OSError as exc:
                raise ModelError(
                    f"cannot write {part}: {exc.strerror or exc}", reason="unwritable"
                ) from None
    except httpx.HTTPError as exc:
        raise SourceFailed(f"{type(exc).__name__}: {exc}") from None
    if total is not None and done != total:
        raise SourceFailed(f"stopped after {done:,} of {total:,} bytes")


def _expected_total(response: httpx.Response, offset: int, size: int | None) -> int | None:
    """The size of the whole file this response belongs to, checked against the chain's `size`;
    SourceFailed for an error status or an answer that does not fit the request."""
    status = response.status_code
    if status == 416 and offset:
        return size
    if status not in (200, 206) or (status == 206 and not offset):
        response.read()
        raise SourceFailed(_describe_error(response), reason="no-blob" if status == 404 else "http")
    total: int | None
    if status == 206:
        content_range = response.headers.get("content-range", "").strip()
        match = _CONTENT_RANGE.fullmatch(content_range)
        if not match or int(match.group(1)) != offset:
            raise SourceFailed(f"answered bytes={offset}- with Content-Range {content_range!r}")
        total = int(match.group(3)) if match.group(3) != "*" else None
    else:
        length = response.headers.get("content-length")
        total = int(length) if length and length.isdigit() else None
    if size is not None and total is not None and total != size:
        raise SourceFailed(f"serves {total:,} bytes; the chain says {size:,}", reason="bad-size")
    return total if total is not None else size


def _describe_error(response: httpx.Response) -> str:
    try:
        body = response.json()
        message = body.get("message") if isinstance(body, dict) else None
    except ValueError:
        message = None
    return f"HTTP {response.status_code}" + (f": {message}" if message else "")
